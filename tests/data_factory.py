"""Small multimodal dialogue datasets made on the fly for tests (no committed binaries)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from mmdialog.data.format import write_dialogues

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220)}
TONES = {"low": 220.0, "high": 880.0}


def write_colour_dataset(folder: Path, dialogues: int = 24, seed: int = 0, with_audio: bool = True,
                         name: str = "train.jsonl") -> Path:
    """Dialogues about a coloured square ("what colour is it?" -> the colour), some with a tone clip
    ("which tone?" -> low/high) and some multi-turn; the answers depend only on the media."""
    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    for colour, rgb in COLOURS.items():
        Image.new("RGB", (40, 40), rgb).save(folder / "images" / f"{colour}.png")
    t = np.arange(16_000) / 16_000
    for tone, freq in TONES.items():
        sf.write(folder / "audio" / f"{tone}.wav", (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16_000)
    records = []
    for index in range(dialogues):
        colour = rng.choice(list(COLOURS))
        turns = [{"role": "user", "text": "<image> what colour is it?", "images": [f"images/{colour}.png"]},
                 {"role": "assistant", "text": colour}]
        if with_audio and index % 3 == 0:
            tone = rng.choice(list(TONES))
            turns += [{"role": "user", "text": "<audio> which tone?",
                       "audio": [{"path": f"audio/{tone}.wav", "transcript": "which tone"}]},
                      {"role": "assistant", "text": tone}]
        if index % 4 == 1:
            turns += [{"role": "user", "text": "thank you"}, {"role": "assistant", "text": "you are welcome"}]
        records.append({"id": f"d{index}", "turns": turns})
    path = folder / name
    write_dialogues(path, records)
    return path
