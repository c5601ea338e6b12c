#!/usr/bin/env python
"""Preference tuning, measured: teach the demo model to answer in full sentences with DPO, keeping its answers.

The demo model answers the synthetic world's questions in single words ("red"). This script plays the people
who prefer sentences: for typed questions of the world's train and valid splits it writes feedback folders
(the app's format) in which every single-word answer is voted down and corrected to a sentence that holds
it verbatim ("The circle is red.", mmdialog/synth/sentences.py), exports them (`mmdialog feedback export`),
DPO-tunes a copy of configs/demo_model on the preference pairs (configs/train/preference_style.yaml) and
replies to the typed questions of the test split, before and after (see `judge` for what is measured).
configs/demo_model is only read: its files are hashed before and after to prove it.

    .venv/bin/python scripts/preference-style-demo.py --world data/world --out runs/dpo-style [key=value ...]

The world is the one the demo model was trained on: `mmdialog synth --out data/world --seed 0 --scenes 6000`.
Extra arguments are training overrides (train.max_steps=200, train.dpo_beta=0.2, ...). Writes report.json
(every number, the training command) and replies.jsonl (every reply, before and after) into --out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from mmdialog.config import load_config
from mmdialog.data.dataset import DialogueDataset
from mmdialog.data.format import parse_dialogue, write_dialogues
from mmdialog.evaluation import normalize_answer, score_dataset
from mmdialog.feedback.export import export_feedback, link_or_copy
from mmdialog.model import MultimodalDialogueModel
from mmdialog.synth.sentences import parse_question, read_answer, sentence
from mmdialog.training.trainer import Trainer

DEMO_MODEL = Path(__file__).resolve().parent.parent / "configs" / "demo_model"
RECIPE = "train/preference_style"
FULL_SENTENCE = re.compile(r"[A-Z][^.?!]*\.")


def folder_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def typed_dialogues(world: Path, split: str, limit: int | None = None) -> list[dict]:
    """The split's dialogues without speech, in file order (the world shuffles its files)."""
    found = []
    for line in (world / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if not any(turn.get("audio") for turn in record["turns"]):
            found.append(record)
    return found[:limit]


def styled(record: dict) -> tuple[list[dict], list[dict]]:
    """(turns with every assistant reply as a sentence, one {kind, slots, answer} per assistant turn)."""
    turns, questions = [], []
    for user, reply in zip(record["turns"][::2], record["turns"][1::2], strict=True):
        parsed = parse_question(user["text"])
        if parsed is None:
            raise ValueError(f"{record['id']}: '{user['text']}' is not a question of the world")
        kind, slots = parsed
        questions.append({"kind": kind, "slots": slots, "answer": reply["text"]})
        turns += [user, {"role": "assistant", "text": sentence(kind, slots, reply["text"])}]
    return turns, questions


def write_feedback(world: Path, records: list[dict], folder: Path) -> None:
    """One feedback record per assistant turn: the world's word voted down, corrected to the sentence;
    earlier turns in the context already in sentences (as the tuned model will have said them)."""
    lines = []
    for record in records:
        turns, _ = styled(record)
        for end in range(1, len(turns), 2):
            context = [dict(turn) for turn in turns[:end]]
            for turn in context:
                if turn.get("images"):
                    turn["images"] = [f"media/{path}" for path in turn["images"]]
                    for path in turn["images"]:
                        link_or_copy(world / path.removeprefix("media/"), folder / path)
            given = record["turns"][end]["text"]
            lines.append({"id": f"{record['id']}-{end}", "turns": [*context, {"role": "assistant", "text": given}],
                          "feedback": {"rating": "down", "correction": turns[end]["text"]}, "meta": record["meta"]})
    folder.mkdir(parents=True, exist_ok=True)
    write_dialogues(folder / "feedback.jsonl", lines)


def build_pairs(world: Path, out: Path, train_dialogues: int, valid_dialogues: int) -> dict:
    summaries = {}
    for split, limit, name in (("train", train_dialogues, "data"), ("valid", valid_dialogues, "data-valid")):
        feedback = out / f"feedback-{split}"
        shutil.rmtree(feedback, ignore_errors=True)
        write_feedback(world, typed_dialogues(world, split, limit), feedback)
        summary = export_feedback(feedback, out / name)
        print(f"{split}: {summary.line()}", flush=True)
        summaries[split] = summary.preferences
    return summaries


def replies(model: MultimodalDialogueModel, world: Path, records: list[dict], sentences: bool) -> list[dict]:
    """Greedy replies to every assistant turn of `records`, the context in the model's own style."""
    dialogues, questions = [], []
    for record in records:
        turns, asked = styled(record)
        raw = {"id": record["id"], "turns": turns if sentences else record["turns"], "meta": record["meta"]}
        dialogues.append(parse_dialogue(raw, world.resolve(), record["id"]))
        questions += [{**question, "family": record["meta"]["family"], "form": record["meta"]["form"]}
                      for question in asked]
    scored = score_dataset(model, DialogueDataset(dialogues, model), batch_size=32)
    return [{**question, "reply": item.prediction} for question, item in zip(questions, scored, strict=True)]


def judge(item: dict) -> dict[str, bool]:
    """sentence: a full sentence (capital letter, three words or more, full stop). own_frame: this question's
    own sentence frame with some answer in it. content: that answer, or the whole reply when it is not in the
    frame, is the world's answer (for single-word replies: exact match). key_words: the world's answer
    appears in the reply as whole words (a reply in another frame, "It is red.", may still say it)."""
    reply = item["reply"].strip()
    read = read_answer(item["kind"], item["slots"], reply)
    answer = normalize_answer(item["answer"])
    return {"sentence": bool(FULL_SENTENCE.fullmatch(reply)) and len(reply.split()) >= 3,
            "own_frame": read is not None,
            "content": normalize_answer(read if read is not None else reply) == answer,
            "key_words": f" {answer} " in f" {normalize_answer(reply)} "}


def summarize(before: list[dict], after: list[dict]) -> dict:
    groups: dict[str, list[tuple[dict, dict]]] = defaultdict(list)
    for old, new in zip(before, after, strict=True):
        for group in ("all", f"form={old['form']}", f"family={old['family']}"):
            groups[group].append((judge(old), judge(new)))
    return {group: {"questions": len(items),
                    **{f"{measure}_{when}": sum(judged[i][measure] for judged in items) / len(items)
                       for i, when in enumerate(("before", "after")) for measure in items[0][0]}}
            for group, items in sorted(groups.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, default=Path("data/world"))
    parser.add_argument("--out", type=Path, default=Path("runs/dpo-style"))
    parser.add_argument("--train-dialogues", type=int, default=24000, help="typed train dialogues made into pairs")
    parser.add_argument("--valid-dialogues", type=int, default=300)
    parser.add_argument("--test-dialogues", type=int, default=None, help="typed test dialogues measured (all)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("overrides", nargs="*", help="training overrides, key.sub=value")
    args = parser.parse_args()
    if not (args.world / "test.jsonl").is_file():
        sys.exit(f"no world in {args.world}: make it with `mmdialog synth --out {args.world} --seed 0 --scenes 6000`")
    if args.threads:
        torch.set_num_threads(args.threads)
    out, started = args.out.resolve(), time.perf_counter()
    original_hash = folder_hash(DEMO_MODEL)
    shutil.rmtree(out / "start", ignore_errors=True)
    shutil.copytree(DEMO_MODEL, out / "start")  # the copy that is tuned: configs/demo_model is only read
    pairs = build_pairs(args.world, out, args.train_dialogues, args.valid_dialogues)

    overrides = [f"train.init_from={out / 'start'}", f"train.data={out / 'data' / 'preferences.jsonl'}",
                 f"train.eval_data={out / 'data-valid' / 'preferences.jsonl'}", f"train.output_dir={out / 'train'}",
                 *args.overrides]
    shutil.rmtree(out / "train", ignore_errors=True)
    print("training: mmdialog train --config", RECIPE, " ".join(overrides), flush=True)
    trained_at = time.perf_counter()
    result = Trainer(load_config(RECIPE, overrides)).train()
    training_seconds = time.perf_counter() - trained_at

    test = typed_dialogues(args.world, "test", args.test_dialogues)
    measured_at = time.perf_counter()
    before = replies(MultimodalDialogueModel.from_pretrained(DEMO_MODEL).eval(), args.world, test, sentences=False)
    after = replies(MultimodalDialogueModel.from_pretrained(out / "train" / "model").eval(), args.world, test,
                    sentences=True)
    table = summarize(before, after)
    report = {
        "command": " ".join(sys.argv), "train_overrides": overrides, "pairs": pairs, "steps": result.steps,
        "final_train_metrics": result.final_train_metrics, "best_eval_dpo_loss": result.best_eval_loss,
        "training_seconds": round(training_seconds, 1),
        "measuring_seconds": round(time.perf_counter() - measured_at, 1),
        "total_seconds": round(time.perf_counter() - started, 1), "results": table,
        "demo_model_unchanged": folder_hash(DEMO_MODEL) == original_hash,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    write_dialogues(out / "replies.jsonl", [{**b, "after": a["reply"], "judged_after": judge(a)}
                                            for b, a in zip(before, after, strict=True)])
    for group, row in table.items():
        print(f"{group:22} {row['questions']:5d} questions: sentences {row['sentence_before']:.3f} -> "
              f"{row['sentence_after']:.3f} (own frame {row['own_frame_after']:.3f}); content (exact match before) "
              f"{row['content_before']:.3f} -> {row['content_after']:.3f}; key words {row['key_words_before']:.3f} "
              f"-> {row['key_words_after']:.3f}")
    print(f"{result.steps} steps, training {training_seconds:.0f} s, total {report['total_seconds']:.0f} s; "
          f"configs/demo_model unchanged: {report['demo_model_unchanged']}; report in {out / 'report.json'}")


if __name__ == "__main__":
    main()
