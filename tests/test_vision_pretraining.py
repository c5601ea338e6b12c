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
from mmdialog.training.vision_pretraining import (
    NOTHING,
    attribute_heads,
    hue_rotation,
    patch_labels,
    pretrain_vision,
    recolour,
    vocabularies,
)

# A 4 x 4 grid of patches at 112 px (a stride-32 ResNet), as in the demo recipe.
TINY_RESNET = {"model_type": "resnet", "embedding_size": 32, "hidden_sizes": [32, 64, 128, 192],
               "depths": [1, 1, 1, 1], "layer_type": "basic"}


def tiny_tower(freeze: str = "full", image_size: int = 112, pooled_layers: tuple[int, ...] = ()) -> VisionEncoder:
    torch.manual_seed(0)
    return VisionEncoder.from_settings(VisionSettings(config=dict(TINY_RESNET), image_size=image_size,
                                                      feature_layer=-1, freeze=freeze,
                                                      pooled_layers=list(pooled_layers)))


@pytest.fixture(scope="module")
def scenes_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate_world(out, seed=2, scenes_train=600, scenes_valid=40, scenes_test=150, spoken=False, progress=False)
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
    scenes.write_text(json.dumps({"image": "a.png", "split": "train", "objects": [{"shape": "star"}]}) + "\n")
    with pytest.raises(ConfigError, match="needs a 'colour' attribute"):
        pretrain_vision(tiny_tower(), VisionPretrainingSettings(scenes=str(scenes), attributes=["shape"], recolour=0.5))


def test_earlier_layers_pooled_to_the_grid_join_the_patch_features() -> None:
    vision = tiny_tower(image_size=96, pooled_layers=(1,))  # stride 32 at 96 px: a 3 x 3 grid
    assert vision.num_patches == 9
    groups = vision.channel_groups()
    assert groups == {"chosen": slice(0, 192), "pooled": slice(192, 224), "coordinates": slice(224, 226)}
    vision.eval()
    blank = torch.zeros(2, 3, 96, 96)
    blank[1, 0, :32, :32] = 3.0  # one strong colour in the top-left patch only
    with torch.no_grad():
        features = vision(blank)
    assert features.shape == (2, 9, 226)
    pooled = features[:, :, groups["pooled"]]
    assert not torch.equal(pooled[0, 0], pooled[1, 0])  # the coloured patch's early channels see it
    assert torch.equal(pooled[0, 8], pooled[1, 8])  # the far corner's do not


def test_pooled_layers_need_a_convolutional_tower() -> None:
    vit = {"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
           "intermediate_size": 64, "image_size": 32, "patch_size": 16}
    with pytest.raises(ConfigError, match="convolutional towers"):
        VisionEncoder.from_settings(VisionSettings(config=vit, image_size=32, pooled_layers=[1]))


def test_turned_hues_keep_greys_and_drop_only_the_colour_labels() -> None:
    third = hue_rotation(torch.tensor([2 * torch.pi / 3]))[0]  # a third of a turn: red to green to blue
    assert torch.allclose(third @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    assert torch.allclose(third @ torch.full((3,), 0.8), torch.full((3,), 0.8), atol=1e-6)
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)
    pixels, labels = torch.randn(8, 3, 4, 4), torch.randint(1, 5, (8, 2, 9))
    generator = torch.Generator().manual_seed(0)
    same = recolour(pixels, labels, 0.0, 0, mean, std, generator)
    assert torch.equal(same[0], pixels) and torch.equal(same[1], labels)
    turned, kept = recolour(pixels, labels, 1.0, 0, mean, std, generator)
    assert (kept[:, 0] == -100).all() and torch.equal(kept[:, 1], labels[:, 1])
    assert not torch.allclose(turned, pixels)


def test_heads_read_their_own_channels_when_colour_comes_from_the_pooled_layers() -> None:
    vision = tiny_tower(image_size=96, pooled_layers=(1,))
    vocab = {"colour": [NOTHING, "red", "blue"], "shape": [NOTHING, "star"]}
    colour, shape = attribute_heads(vision, vocab, ["colour"])
    features = torch.randn(1, 9, vision.hidden_size)
    changed = features.clone()
    changed[..., vision.channel_groups()["chosen"]] += 1.0
    assert torch.equal(colour(features), colour(changed)) and not torch.equal(shape(features), shape(changed))
    with pytest.raises(ConfigError, match="no attribute 'size'"):
        attribute_heads(vision, vocab, ["size"])
    with pytest.raises(ConfigError, match="needs vision.pooled_layers"):
        attribute_heads(tiny_tower(image_size=96), vocab, ["colour"])


def test_pairs_never_drawn_in_training_are_seen_apart(scenes_file: Path) -> None:
    """The test split holds colour-shape pairs that no training scene has. A plain tower names their shape
    from their colour (chance-like on those pairs); turned hues and a colour head on the pooled early
    channels make them as easy as the rest."""
    def new_pairs(**options) -> dict[str, float]:
        vision = tiny_tower(image_size=96, pooled_layers=(1,))
        settings = VisionPretrainingSettings(scenes=str(scenes_file), steps=300, batch_size=32, eval_split="test",
                                             **options)
        report = pretrain_vision(vision, settings)
        return {k.split("/")[1]: v for k, v in report.items() if k.startswith("patch_accuracy_new_combinations")}

    plain = new_pairs()
    apart = new_pairs(recolour=0.5, from_pooled_layers=["colour"])
    print(f"pairs never drawn in training, plain: {plain}; apart: {apart}")
    assert apart["shape"] >= 0.85 and apart["colour"] >= 0.85, (plain, apart)
    assert min(plain.values()) <= min(apart.values()) - 0.15, (plain, apart)
