"""The synthetic world put together: scenes, their dialogues, spoken questions, and the split files.

Each scene gets one dialogue per image family (colour, shape, count, position, existence, followup, describe), all
about the same picture, so the question, not the picture alone, decides the answer. Kiosk dialogues
(greetings and facts, typed, no picture) come on top. Within a family a question kind is drawn at random
and then the answer that kind has given least often so far, which keeps every family near its lowest
possible chance level (yes / no at 50 %).

The test split adds what training never shows: scenes with a held-out colour-shape pair (the dialogue asks
about that object whenever its family allows), held-out phrasings, and a held-out voice; `meta` tags each.
Everything is drawn from `random.Random` / numpy generators seeded from the seed and the split.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from decoders.seq2seq import AUDIO_TOKEN, IMAGE_TOKEN
from mmdialog.data.format import write_dialogues
from mmdialog.synth.questions import FAMILIES, Candidate, Question, kiosk_question
from mmdialog.synth.render import check_image_size, render_scene
from mmdialog.synth.scenes import (
    ALL_COMBOS,
    COLOURS,
    NUMBER_WORDS,
    SHAPES,
    SIDES,
    SIZES,
    Combo,
    pick_held_out,
    sample_scene,
)
from mmdialog.synth.speech import (
    ESPEAK_VOICES,
    PIPER_VOICES,
    TEST_VOICE,
    VoiceSetting,
    clip_table,
    make_clips,
    voices_for,
)
from mmdialog.synth.stats import split_summary
from mmdialog.synth.templates import KIOSK_ANSWERS, KIOSK_QUESTIONS, QUESTIONS, fill

WORLD_VERSION = 1
SPLITS = ("train", "valid", "test")
HELD_OUT_COMBOS = 4
SPOKEN_FRACTION = 1 / 3  # of image dialogues, in every split
KIOSK_PER_SCENE = 0.5  # about 8 % of all dialogues
KIOSK_SECOND_TURN = 0.3  # share of kiosk dialogues with a second question ("hello" then "when do you close?")
# Test split only: the share of scenes with a held-out pair, of dialogues in a held-out phrasing, and of
# spoken dialogues in the held-out voice. Drawn independently, so each effect can be measured alone.
TEST_UNSEEN_COMBO = 0.4
TEST_UNSEEN_PHRASING = 0.4
TEST_UNSEEN_VOICE = 0.5
ANSWER_CONVENTION = (
    "lower case, ASCII, single spaces, no punctuation; counts as number words (zero-four); positions as the "
    "column (left, middle, right); objects as 'a <colour> <shape>' with 'an' before a vowel; yes / no; "
    "kiosk answers are fixed sentences"
)


@dataclass
class PlannedTurn:
    text: str  # the question as typed or said
    answer: str
    voice: VoiceSetting | None = None  # set when the question is spoken


@dataclass
class Plan:
    """One dialogue before its spoken questions exist."""

    id: str
    image: str | None
    turns: list[PlannedTurn]
    meta: dict


class Balancer:
    """Picks among a family's candidates: a question kind at random, then its least given answer so far."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.given: dict[tuple[str, str], int] = {}

    def choose(self, candidates: list[Candidate]) -> Candidate:
        kind = self.rng.choice(sorted({c.kind for c in candidates}))
        pool = [c for c in candidates if c.kind == kind]
        least = min(self.given.get((kind, c.answer), 0) for c in pool)
        answer = self.rng.choice(sorted({c.answer for c in pool if self.given.get((kind, c.answer), 0) == least}))
        self.given[(kind, answer)] = least + 1
        return self.rng.choice([c for c in pool if c.answer == answer])


def _worded(questions: tuple[Question, ...], rng: random.Random, held_out: bool) -> list[PlannedTurn]:
    """The questions in words; a held-out phrasing goes on the last one, the question the dialogue is about."""
    turns = []
    for index, question in enumerate(questions):
        phrasings = QUESTIONS.get(question.kind) or KIOSK_QUESTIONS[question.kind]
        template = phrasings.pick(rng, held_out and index == len(questions) - 1)
        turns.append(PlannedTurn(fill(template, dict(question.slots)), question.answer))
    return turns


def _speak(turns: list[PlannedTurn], rng: random.Random, test_voice: bool) -> None:
    for turn in turns:
        turn.voice = TEST_VOICE if test_voice else rng.choice(voices_for(turn.text))


@dataclass
class SplitMaker:
    split: str
    rng: random.Random
    held_out: set[Combo]
    spoken: bool
    image_size: int
    out: Path
    plans: list[Plan] = field(default_factory=list)
    scenes: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.balancer = Balancer(self.rng)
        self.test = self.split == "test"

    def _chance(self, share: float) -> bool:
        return self.test and self.rng.random() < share

    def add_scene(self, index: int) -> None:
        unseen = self._chance(TEST_UNSEEN_COMBO)
        seen_combos = [c for c in ALL_COMBOS if c not in self.held_out]
        include = self.rng.choice(sorted(self.held_out)) if unseen else None
        scene = sample_scene(self.rng, seen_combos, include)
        image = f"images/{self.split}/{index:05d}.png"
        render_scene(scene, self.image_size).save(self.out / image, format="PNG")
        self.scenes.append({"image": image, "split": self.split, **scene.describe()})
        for family, candidates_of in FAMILIES.items():
            candidates = candidates_of(scene)
            if unseen:  # ask about the new pair itself whenever the family can
                candidates = [c for c in candidates if c.combos & self.held_out] or candidates
            else:  # outside these scenes a held-out pair is never even named ("is there a red star?" "no")
                candidates = [c for c in candidates if not c.combos & self.held_out]
            if candidates:
                self._add(f"{self.split}-{index:05d}-{family}", image, self.balancer.choose(candidates), unseen)

    def _add(self, dialogue_id: str, image: str, chosen: Candidate, unseen_scene: bool) -> None:
        held_phrasing = self._chance(TEST_UNSEEN_PHRASING)
        turns = _worded(chosen.questions, self.rng, held_phrasing)
        spoken = self.spoken and self.rng.random() < SPOKEN_FRACTION
        test_voice = spoken and self._chance(TEST_UNSEEN_VOICE)
        if spoken:
            _speak(turns, self.rng, test_voice)
        self.plans.append(Plan(dialogue_id, image, turns, {
            "family": chosen.family, "kind": chosen.kind, "form": "spoken+image" if spoken else "typed+image",
            "unseen_combo": unseen_scene or bool(chosen.combos & self.held_out),
            "unseen_phrasing": held_phrasing, "unseen_voice": test_voice,
        }))

    def add_kiosk(self, count: int) -> None:
        deck: list[str] = []
        for index in range(count):
            intents = []
            for _ in range(2 if self.rng.random() < KIOSK_SECOND_TURN else 1):
                if not deck:  # every intent once per round: balanced answers
                    deck = self.rng.sample(sorted(KIOSK_ANSWERS), len(KIOSK_ANSWERS))
                intents.append(deck.pop())
            held_phrasing = self._chance(TEST_UNSEEN_PHRASING)
            turns = _worded(tuple(kiosk_question(i) for i in intents), self.rng, held_phrasing)
            self.plans.append(Plan(f"{self.split}-kiosk-{index:05d}", None, turns, {
                "family": "kiosk", "kind": intents[-1], "form": "typed", "unseen_combo": False,
                "unseen_phrasing": held_phrasing, "unseen_voice": False,
            }))


def _record(plan: Plan, clips: dict) -> dict:
    turns = []
    for index, turn in enumerate(plan.turns):
        prefix = f"{IMAGE_TOKEN} " if plan.image and index == 0 else ""
        user: dict = {"role": "user", "text": prefix + (turn.text if turn.voice is None else AUDIO_TOKEN)}
        if prefix:
            user["images"] = [plan.image]
        if turn.voice is not None:
            clip = clips[(turn.text, turn.voice.id)]
            user["audio"] = [{"path": clip.path, "transcript": clip.transcript}]
        turns += [user, {"role": "assistant", "text": turn.answer}]
    return {"id": plan.id, "turns": turns, "meta": plan.meta}


def _world_description(seed: int, image_size: int, held_out: list[Combo], summary: dict, clips: dict) -> dict:
    phrasings = {kind: {"seen": list(p.seen), "held_out": p.held_out}
                 for kind, p in {**QUESTIONS, **KIOSK_QUESTIONS}.items()}
    return {
        "version": WORLD_VERSION, "seed": seed, "image_size": image_size,
        "vocabulary": {"colours": COLOURS, "shapes": list(SHAPES), "sizes": list(SIZES), "sides": list(SIDES),
                       "numbers": list(NUMBER_WORDS)},
        "families": [*FAMILIES, "kiosk"],
        "answer_convention": ANSWER_CONVENTION,
        "kiosk_answers": KIOSK_ANSWERS,
        "held_out_combos": [list(c) for c in held_out],
        "phrasings": phrasings,
        "voices": {"train": [v.id for v in (*PIPER_VOICES, *ESPEAK_VOICES)], "test_only": TEST_VOICE.id},
        "splits": summary,
        "clips": clip_table(clips.values()),
    }


def generate_world(out: Path, seed: int = 0, scenes_train: int = 3000, scenes_valid: int = 200,
                   scenes_test: int = 400, spoken: bool = True, progress: bool = True, image_size: int = 112,
                   cache_dir: Path | None = None) -> dict:
    """Write the world to `out`: {train,valid,test}.jsonl, images/, audio/, scenes.jsonl, world.json.

    Spoken clips are cached by (text, voice) in `cache_dir` (default: `out/audio` itself), so another seed or
    a rerun only makes the clips it has not made before. Returns the counts per split (dialogues, families,
    forms, held-out tags, chance levels) and the timings of this run.
    """
    out = Path(out)
    check_image_size(image_size)
    counts = (scenes_train, scenes_valid, scenes_test)
    if min(counts) < 1:
        raise ValueError(f"every split needs at least one scene, got train/valid/test = {counts}")
    rng = random.Random(f"mmdialog-synth/{seed}/held-out")
    held_out = pick_held_out(rng, HELD_OUT_COMBOS)
    started = time.perf_counter()
    makers = []
    for split, count in zip(SPLITS, counts, strict=True):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        maker = SplitMaker(split, random.Random(f"mmdialog-synth/{seed}/{split}"), set(held_out), spoken,
                           image_size, out)
        for index in tqdm(range(count), desc=f"{split} scenes", unit="scene", disable=not progress):
            maker.add_scene(index)
        maker.add_kiosk(round(count * KIOSK_PER_SCENE))
        maker.rng.shuffle(maker.plans)  # no file is ordered by scene or family, in case a reader takes the head
        makers.append(maker)
    scene_seconds = time.perf_counter() - started
    requests = [(t.text, t.voice) for m in makers for p in m.plans for t in p.turns if t.voice is not None]
    clips, clip_timings = make_clips(requests, out / "audio", cache_dir, progress) if requests else ({}, None)
    summary = {}
    for maker in makers:
        records = [_record(plan, clips) for plan in maker.plans]
        write_dialogues(out / f"{maker.split}.jsonl", records)
        summary[maker.split] = split_summary(records)
    write_dialogues(out / "scenes.jsonl", [s for m in makers for s in m.scenes])
    description = _world_description(seed, image_size, held_out, summary, clips)
    (out / "world.json").write_text(json.dumps(description, indent=1) + "\n", encoding="utf-8")
    scenes = sum(len(m.scenes) for m in makers)
    timings = {"scenes_s": round(scene_seconds, 2),
               "scenes_per_1000_s": round(1000 * scene_seconds / max(scenes, 1), 2)}
    if clip_timings is not None:
        timings.update({k: round(v, 2) for k, v in vars(clip_timings).items()})
    return {"splits": summary, "held_out_combos": held_out, "clips": len(clips), "timings": timings}
