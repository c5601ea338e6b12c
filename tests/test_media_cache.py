"""Encoder states stored beside a clip are used only when the same frozen speech model made them; a frozen vision
tower's features are worked out once per picture for training."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf
import torch
from conftest import build_tiny, make_tone
from data_factory import write_colour_dataset
from safetensors.torch import save_file

from mmdialog.data.dataset import DialogueDataset
from mmdialog.data.format import load_dialogues
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


def test_cached_image_features_give_the_same_loss_as_the_tower(tmp_path):
    model = build_tiny("speech.mode=features").eval()
    dialogues, _ = load_dialogues(write_colour_dataset(tmp_path, dialogues=12, seed=0))
    dataset = DialogueDataset(dialogues, model)
    pictured = [i for i in range(len(dataset)) if "image" in dataset.modalities(i)][:6]
    with torch.no_grad():
        fresh = model([dataset[i] for i in pictured]).loss
        assert dataset.cache_image_features() == 3  # one pass per distinct picture, not per example
        items = [dataset[i] for i in pictured]
        assert all(m.features is not None and m.pixel_values is None for item in items for m in item.media
                   if m.kind == "image")
        assert torch.allclose(model(items).loss, fresh, atol=1e-5)
        model.zeroed_modalities = {"image"}  # the image ablation still reaches cached features
        zeroed = model(items).loss
        model.zeroed_modalities = set()
    assert not torch.allclose(zeroed, fresh)


def test_a_tower_that_trains_gets_no_cached_features(tmp_path):
    model = build_tiny("speech.mode=features", "vision.freeze=full")
    dialogues, _ = load_dialogues(write_colour_dataset(tmp_path, dialogues=4, seed=0))
    assert DialogueDataset(dialogues, model).cache_image_features() == 0
