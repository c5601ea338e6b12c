"""Stage one of the demo recipe: a vision tower learns colour and shape per patch from annotated scenes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from encoders.vision import VisionEncoder
from mmdialog.errors import ConfigError
from mmdialog.settings import VisionPretrainingSettings, VisionSettings
from mmdialog.synth import generate_world
from mmdialog.training.vision_pretraining import NOTHING, patch_labels, pretrain_vision, vocabularies

# A 4 x 4 grid of patches at 112 px (a stride-32 ResNet), as in the demo recipe.
TINY_RESNET = {"model_type": "resnet", "embedding_size": 32, "hidden_sizes": [32, 64, 128, 192],
               "depths": [1, 1, 1, 1], "layer_type": "basic"}


def tiny_tower(freeze: str = "full") -> VisionEncoder:
    torch.manual_seed(0)
    return VisionEncoder.from_settings(VisionSettings(config=dict(TINY_RESNET), image_size=112, feature_layer=-1,
                                                      freeze=freeze))


@pytest.fixture(scope="module")
def scenes_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate_world(out, seed=2, scenes_train=600, scenes_valid=40, scenes_test=1, spoken=False, progress=False)
    return out / "scenes.jsonl"


def test_a_convolutional_tower_gives_patches_that_know_their_place() -> None:
    vision = tiny_tower()
    assert (vision.num_patches, vision.hidden_size) == (16, 192 + 2)
    with torch.no_grad():
        features = vision(torch.zeros(2, 3, 112, 112))
    assert features.shape == (2, 16, 194)
    x, y = features[0, :, -2], features[0, :, -1]
    assert torch.allclose(x[:4], torch.tensor([-1, -1 / 3, 1 / 3, 1])) and torch.equal(x[:4], x[4:8])
    assert float(y[0]) == -1 and float(y[-1]) == 1 and float(y[5]) == float(y[6])


def test_each_object_labels_the_patch_its_centre_is_in() -> None:
    scene = {"objects": [{"x": 0.1, "y": 0.3, "colour": "red", "shape": "star"},
                         {"x": 0.99, "y": 0.99, "colour": "blue", "shape": "circle"}]}
    vocab = vocabularies([scene], ["colour", "shape"])
    assert vocab["colour"] == [NOTHING, "blue", "red"]
    labels = patch_labels(scene, 4, vocab)
    assert labels.shape == (2, 16)
    assert labels[0, 4] == vocab["colour"].index("red") and labels[1, 4] == vocab["shape"].index("star")
    assert labels[0, 15] == vocab["colour"].index("blue")  # x = y = 0.99: the last patch, not past it
    assert int((labels[0] > 0).sum()) == 2


def test_a_tower_learns_colour_and_shape_per_patch(scenes_file: Path) -> None:
    vision = tiny_tower()
    settings = VisionPretrainingSettings(scenes=str(scenes_file), steps=300, batch_size=32)
    report = pretrain_vision(vision, settings)
    # Chance for an object's patch is about 1/6 for each attribute.
    assert report["patch_accuracy/colour"] >= 0.8, report
    assert report["patch_accuracy/shape"] >= 0.5, report


def test_a_tower_kept_frozen_for_dialogue_training_stays_frozen(scenes_file: Path) -> None:
    vision = tiny_tower()
    vision.requires_grad_(False)
    before = [p.clone() for p in vision.parameters()]
    pretrain_vision(vision, VisionPretrainingSettings(scenes=str(scenes_file), steps=3, batch_size=4))
    assert not any(p.requires_grad for p in vision.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, vision.parameters(), strict=True))


def test_bad_annotations_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no file"):
        pretrain_vision(tiny_tower(), VisionPretrainingSettings(scenes=str(tmp_path / "missing.jsonl")))
    scenes = tmp_path / "scenes.jsonl"
    scenes.write_text(json.dumps({"image": "a.png", "split": "train", "objects": [{"x": 0.5, "y": 0.5}]}) + "\n")
    with pytest.raises(ConfigError, match="no attribute 'colour'"):
        pretrain_vision(tiny_tower(), VisionPretrainingSettings(scenes=str(scenes)))
