"""Encoder states stored beside a clip are used only when the same frozen speech model made them."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf
import torch
from conftest import make_tone
from safetensors.torch import save_file

from mmdialog.media import MediaPreparer


def write_clip(folder, speech_model, window=5.0):
    sf.write(folder / "q.wav", make_tone(1.0), 16_000)
    states = torch.full((50, 64), 0.5)
    made_by = json.dumps({"speech_model": speech_model, "min_window_seconds": window}, sort_keys=True)
    save_file({"states": states}, str(folder / "q.states.safetensors"), metadata={"made_by": made_by})
    return folder / "q.wav"


def test_matching_states_are_used(tmp_path, tiny_model):
    clip = write_clip(tmp_path, tiny_model.config.speech.name)
    media = MediaPreparer(tiny_model).audio(clip, transcript="hello")
    assert media.features is not None and torch.all(media.features == 0.5)


def test_states_of_another_model_or_window_are_ignored(tmp_path, tiny_model):
    for model, window in (("bundled:tiny.en", 5.0), (tiny_model.config.speech.name, 30.0)):
        clip = write_clip(tmp_path, model, window)
        media = MediaPreparer(tiny_model).audio(clip, transcript="hello")
        assert media.features is None or not torch.all(media.features == 0.5)
        assert media.mel is not None and np.isfinite(media.mel.numpy()).all()
