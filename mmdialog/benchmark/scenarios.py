"""What the benchmark asks: typed, pictured, spoken and long conversations, with their inputs made on the spot.

The picture is a scene of the synthetic world and the spoken question is said by the configured voice, so the
demo model meets the kind of input it was trained on and its replies are one sentence, as in real use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from encoders.audio_io import resample
from mmdialog.pipeline import DialoguePipeline
from mmdialog.synth.render import draw, placed

RATE = 16_000
QUESTION = "what color is the circle?"
FOLLOW_UPS = ("what shape is the blue object?", "is there a star?", "how many objects are there?",
              "where is the circle?", "what do you see?")
AUDIO_SECONDS = (1, 5, 15, 30)


@dataclass
class TurnInput:
    text: str = ""
    image: str | None = None
    audio: str | None = None


@dataclass
class Scenario:
    name: str
    turns: list[TurnInput]
    audio_seconds: float = 0.0  # for the cost-against-audio-length curve
    tags: dict[str, str] = field(default_factory=dict)


def _picture(folder: Path) -> str:
    return str(draw(folder / "scene.png", placed("yellow", "circle", 0), placed("blue", "star", 2)))


def _spoken(pipeline: DialoguePipeline) -> np.ndarray:
    """The question in the configured voice at 16 kHz; a rising tone where the preset has no voice."""
    voice = pipeline.speech_out
    if voice is None:
        t = np.arange(int(1.8 * RATE)) / RATE
        return (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t)).astype(np.float32)
    return resample(voice.speak_all(QUESTION.capitalize()), voice.sample_rate, RATE).astype(np.float32)


def _clip(speech: np.ndarray, seconds: float, folder: Path, name: str) -> str:
    """`seconds` of audio: the question, repeated after short pauses to fill longer clips, cut to length."""
    pause = np.zeros(RATE // 4, dtype=np.float32)
    target = int(seconds * RATE)
    pieces, length = [], 0
    while length < target:
        pieces += [speech, pause]
        length += len(speech) + len(pause)
    path = folder / f"{name}.wav"
    sf.write(path, np.concatenate(pieces)[:target], RATE)
    return str(path)


def build_scenarios(pipeline: DialoguePipeline, folder: Path) -> list[Scenario]:
    folder.mkdir(parents=True, exist_ok=True)
    image, speech = _picture(folder), _spoken(pipeline)
    scenarios = [
        Scenario("typed", [TurnInput(text="hello")]),
        Scenario("typed+image", [TurnInput(text=QUESTION, image=image)]),
        Scenario("spoken_2s+image", [TurnInput(image=image, audio=_clip(speech, 2.0, folder, "spoken_2s"))],
                 audio_seconds=2.0),
        Scenario("conversation_6_turns",
                 [TurnInput(text=QUESTION, image=image), *(TurnInput(text=t) for t in FOLLOW_UPS)]),
    ]
    scenarios += [Scenario(f"audio_{s}s", [TurnInput(audio=_clip(speech, s, folder, f"audio_{s}s"))],
                           audio_seconds=float(s)) for s in AUDIO_SECONDS]
    return scenarios
