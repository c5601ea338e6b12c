"""Learning from feedback: export of rated replies, and DPO on the tiny preset (it learns, freezes, resumes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from safetensors.torch import load_file
from test_ddp import WORKER, run
from test_training import final_weights, tiny_training_config
from typer.testing import CliRunner

from mmdialog.cli import app
from mmdialog.data.format import DataError, load_dialogues, load_preferences
from mmdialog.errors import ConfigError
from mmdialog.feedback.export import export_feedback
from mmdialog.training.trainer import Trainer

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220)}
STYLE_PAIRS = 14  # "The square is red." corrects "red"; with the 2 other pairs, 16: two batches of 8
SPECIAL = {  # id: (supervised reply or None, (chosen, rejected) or None)
    "up": ("red", None),
    "corrected": ("It is blue.", ("It is blue.", "green")),
    "down": (None, None),
    "same": ("red", None),
    "spoken": ("low", ("low", "high")),
    "unrated": (None, None),
}


def rated(record_id, colour, given, rating, correction, image=None, earlier=()):
    question = {"role": "user", "text": "<image> what colour is it?", "images": [image or f"media/{colour}.png"]}
    turns = [question, *earlier] if earlier else [question]
    return {"id": record_id, "turns": [*turns, {"role": "assistant", "text": given}],
            "feedback": {"rating": rating, "correction": correction}, "meta": {"session": "s1"}}


def write_feedback_folder(folder):
    """The app's feedback folder: the SPECIAL records, three bad ones, then STYLE_PAIRS style corrections."""
    media = folder / "media"
    media.mkdir(parents=True)
    for colour, rgb in COLOURS.items():
        Image.new("RGB", (40, 40), rgb).save(media / f"{colour}.png")
    Image.new("RGB", (40, 40), (0, 0, 0)).save(media / "only-dropped.png")
    tone = (0.3 * np.sin(2 * np.pi * 220.0 * np.arange(16_000) / 16_000)).astype(np.float32)
    sf.write(media / "low.wav", tone, 16_000)
    spoken_earlier = [{"role": "assistant", "text": "green"},
                      {"role": "user", "text": "<audio>", "audio": [{"path": "media/low.wav", "transcript": "tone?"}]}]
    lines = [
        rated("up", "red", "red", "up", None),
        rated("corrected", "blue", "green", "down", "It is blue."),
        rated("down", "green", "blue", "down", None, image="media/only-dropped.png"),
        rated("same", "red", "red", None, " red\n"),
        rated("spoken", "green", "high", "down", "low", earlier=spoken_earlier),
        rated("unrated", "red", "red", None, ""),
        rated("missing-image", "red", "red", "up", None, image="media/nope.png"),
        rated("bad-rating", "red", "red", "meh", None),
        {**rated("ends-with-user", "red", "red", "up", None), "turns": rated("x", "red", "red", "up", None)["turns"]
         + [{"role": "user", "text": "and?"}]},
    ]
    for index in range(STYLE_PAIRS):
        colour = list(COLOURS)[index % 3]
        lines.append(rated(f"style-{index}", colour, colour, "down", f"The square is {colour}."))
    (folder / "feedback.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    source = write_feedback_folder(tmp_path_factory.mktemp("feedback"))
    out = tmp_path_factory.mktemp("exported")
    return source, out, export_feedback(source, out)


def by_id(path):
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_feedback_records_read_as_training_dialogues(exported):
    source, _, _ = exported
    dialogues, report = load_dialogues(source / "feedback.jsonl", skip_bad=True)
    assert report.skipped == 1  # only the missing image: the feedback key itself is no problem
    assert dialogues[0].turns[-1].text == "red"


def test_export_writes_the_expected_records_and_both_validate(exported):
    _, out, summary = exported
    supervised, preferences = by_id(out / "supervised.jsonl"), by_id(out / "preferences.jsonl")
    for record_id, (reply, pair) in SPECIAL.items():
        assert (supervised[record_id]["turns"][-1]["text"] if record_id in supervised else None) == reply
        assert ((preferences[record_id]["chosen"], preferences[record_id]["rejected"])
                if record_id in preferences else None) == pair
    spoken = preferences["spoken"]
    assert [t["role"] for t in spoken["turns"]] == ["user", "assistant", "user"]
    assert spoken["turns"][-1]["audio"] == [{"path": "media/low.wav", "transcript": "tone?"}]
    assert supervised["corrected"]["meta"] == {"session": "s1", "feedback": "down", "corrected": True}
    assert all("feedback" not in r for r in [*supervised.values(), *preferences.values()])
    assert preferences["style-0"] == {
        "id": "style-0", "turns": [{"role": "user", "text": "<image> what colour is it?", "images": ["media/red.png"]}],
        "chosen": "The square is red.", "rejected": "red", "meta": {"session": "s1", "feedback": "down",
                                                                   "corrected": True}}
    assert (summary.records, summary.supervised, summary.corrected) == (9 + STYLE_PAIRS, 4 + STYLE_PAIRS,
                                                                       3 + STYLE_PAIRS)
    assert (summary.preferences, summary.dropped, len(summary.problems), summary.media) == (2 + STYLE_PAIRS, 2, 3, 4)
    assert [p.split(":")[1] for p in summary.problems] == ["7", "8", "9"]
    # Self-contained: both files validate in the output folder, with only the media they use.
    dialogues, _ = load_dialogues(out / "supervised.jsonl")
    pairs, report = load_preferences(out / "preferences.jsonl")
    assert len(dialogues) == 4 + STYLE_PAIRS and len(pairs) == report.targets == 2 + STYLE_PAIRS
    assert sorted(p.name for p in (out / "media").iterdir()) == ["blue.png", "green.png", "low.wav", "red.png"]


def test_export_command_prints_one_summary_line(exported, tmp_path):
    source, _, _ = exported
    result = CliRunner().invoke(app, ["feedback", "export", "--from", str(source), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert f"{9 + STYLE_PAIRS} feedback records: {4 + STYLE_PAIRS} supervised" in result.output.splitlines()[-1]
    missing = CliRunner().invoke(app, ["feedback", "export", "--from", str(tmp_path), "--out", str(tmp_path / "p")])
    assert missing.exit_code == 2 and "holds no feedback.jsonl" in missing.output


def test_preference_pairs_are_validated(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    context = [{"role": "user", "text": "<image> which?", "images": ["a.png"]}]
    lines = [{"turns": context, "chosen": "A.", "rejected": "a"},
             {"turns": [*context, {"role": "assistant", "text": "a"}], "chosen": "A.", "rejected": "a"},
             {"turns": context, "chosen": "A."},
             {"turns": context, "chosen": "a", "rejected": "a"}]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(DataError) as error:
        load_preferences(path)
    assert [p.split(": ", 1)[1].split(" ")[:3] for p in error.value.problems] == [
        ["a", "preference", "pair's"], ["a", "preference", "pair"], ["'chosen'", "and", "'rejected'"]]
    with pytest.raises(DataError, match="train.objective=dpo"):  # pairs are no dialogues: the error says so
        load_dialogues(path)


def dpo_config(tmp_path, pairs, *overrides, out="dpo"):
    return tiny_training_config(tmp_path, pairs, "train.objective=dpo", "train.dpo_beta=0.5", *overrides, out=out)


@pytest.mark.slow
def test_dpo_widens_the_margin_and_keeps_frozen_weights_and_the_reference(tmp_path, exported):
    pairs = exported[1] / "preferences.jsonl"
    trainer = Trainer(dpo_config(tmp_path, pairs, f"train.eval_data={pairs}", "train.max_steps=16",
                                 "decoder.freeze=lora", "train.lr_lora=1e-2"))
    model, reference = trainer.accelerator.unwrap_model(trainer.model), trainer.objective.reference
    before = trainer.evaluate()
    # The policy starts as a copy of the reference (dropout off): every reward is exactly zero.
    assert before["margin"] == 0 and before["accuracy"] == 0
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    reference_weights = {n: p.detach().clone() for n, p in reference.named_parameters()}
    trainer.train()
    after = trainer.evaluate()
    print(f"DPO on {len(trainer.eval_loader.dataset)} pairs: {before} -> {after}")
    assert after["accuracy"] >= 0.9 and after["margin"] > 0.5 and after["loss"] < before["loss"]
    changed = {n for n, p in model.named_parameters() if not torch.equal(weights[n], p.detach())}
    assert changed and all(n.startswith("fusion.") or "lora_" in n for n in changed)
    assert all(torch.equal(reference_weights[n], p) for n, p in reference.named_parameters())
    assert not all(torch.equal(p, dict(reference.named_parameters())[n]) for n, p in model.named_parameters())


@pytest.mark.slow
def test_dpo_resume_is_exact(tmp_path, exported):
    pairs = exported[1] / "preferences.jsonl"
    straight = Trainer(dpo_config(tmp_path, pairs, "train.max_steps=8", out="straight"))
    straight_result = straight.train()
    first = Trainer(dpo_config(tmp_path, pairs, "train.max_steps=8", "train.save_every=4", out="interrupted"))
    first.total_steps = 4  # stop half-way, as a kill after the checkpoint would
    first.train()
    second = Trainer(dpo_config(tmp_path, pairs, "train.max_steps=8", "train.save_every=4", out="interrupted"))
    resumed = second.train(resume=True)
    assert resumed.steps == 8 and set(resumed.final_train_metrics) >= {"loss", "margin", "accuracy"}
    assert abs(resumed.final_train_loss - straight_result.final_train_loss) < 1e-5
    a = final_weights(straight.accelerator.unwrap_model(straight.model))
    b = final_weights(second.accelerator.unwrap_model(second.model))
    assert all(torch.allclose(a[n], b[n], atol=1e-6) for n in a)


def test_reference_from_a_folder_and_what_dpo_refuses(tmp_path, exported):
    pairs = exported[1] / "preferences.jsonl"
    saved = Trainer(tiny_training_config(tmp_path, exported[1] / "supervised.jsonl", out="sft"))
    saved.accelerator.unwrap_model(saved.model).save_pretrained(tmp_path / "start")
    trainer = Trainer(dpo_config(tmp_path, pairs, f"train.reference={tmp_path / 'start'}"))
    stored = dict(saved.accelerator.unwrap_model(saved.model).named_parameters())
    assert all(torch.equal(p, stored[n]) for n, p in trainer.objective.reference.named_parameters())
    with pytest.raises(ConfigError, match="vision_pretraining"):
        Trainer(dpo_config(tmp_path, pairs, f"train.vision_pretraining.scenes={pairs}"))
    with pytest.raises(DataError, match="end with the user turn"):  # a dialogue file is no preference file
        Trainer(dpo_config(tmp_path, exported[1] / "supervised.jsonl"))


@pytest.mark.slow
def test_dpo_under_two_process_ddp_matches_one_process_with_double_batch(tmp_path, exported):
    pairs, dpo = exported[1] / "preferences.jsonl", ["train.objective=dpo", "train.dpo_sft_weight=0.5"]
    run([sys.executable, str(WORKER), str(pairs), str(tmp_path / "single"), "8", "2", *dpo], tmp_path)
    accelerate = Path(sys.executable).with_name("accelerate")
    run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29534",
         str(WORKER), str(pairs), str(tmp_path / "ddp"), "4", "2", *dpo], tmp_path)
    rank0, rank1 = (load_file(tmp_path / "ddp" / f"weights-rank{r}.safetensors") for r in (0, 1))
    single = load_file(tmp_path / "single" / "weights-rank0.safetensors")
    assert all(torch.equal(rank0[n], rank1[n]) for n in rank0), "the ranks' weights must be identical"
    assert max((rank0[n] - single[n]).abs().max().item() for n in rank0) <= 1e-5


def test_world_sentences_hold_the_answer_and_read_back(tmp_path):
    """The style of scripts/preference-style-demo.py: every typed question of a world (follow-ups and kiosk
    included) gets a sentence holding its answer verbatim, and only that sentence reads back as that answer."""
    from mmdialog.evaluation import normalize_answer
    from mmdialog.synth import generate_world
    from mmdialog.synth.sentences import parse_question, read_answer, sentence

    generate_world(tmp_path, seed=1, scenes_train=30, scenes_valid=1, scenes_test=10, spoken=False, progress=False)
    asked = [(user["text"], reply["text"]) for split in ("train", "test")
             for record in map(json.loads, (tmp_path / f"{split}.jsonl").read_text().splitlines())
             for user, reply in zip(record["turns"][::2], record["turns"][1::2], strict=True)]
    kinds = set()
    for question, answer in asked:
        kind, slots = parse_question(question)
        kinds.add(kind)
        said = sentence(kind, slots, answer)
        assert said[0].isupper() and said.endswith(".") and normalize_answer(answer) in normalize_answer(said)
        assert read_answer(kind, slots, said) == answer and read_answer(kind, slots, answer) is None
    assert len(kinds) >= 20
    assert sentence("colour_of_shape", {"shape": "circle"}, "red") == "The circle is red."
    assert sentence("exists_combo", {"colour": "orange", "shape": "star"}, "yes") == "Yes, there is an orange star."
