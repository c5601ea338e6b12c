"""Stage one for a vision tower trained from scratch: learn to see from annotated scenes, before any dialogue.

A tower that starts from random weights learns nothing useful from question answering alone for a long
time: the answer depends on one object among several, so the gradient reaching the tower is weak until the
decoder already knows where to look, and it cannot learn where to look until the tower tells objects apart.
Dense labels break that loop. Each patch of the tower's grid is labelled with the attributes of the object
whose centre lies in it (or "nothing"), and a linear head per attribute classifies every patch. A minute of
this gives patch features that name colour and shape where the object is, and dialogue training then only
has to learn to look them up. Separate heads alone do not make a colour-shape pair never drawn in training
two familiar answers: the tower learns to guess one attribute from the other. `recolour` (shape learned in
every hue) and `from_pooled_layers` (colour read from early channels only) keep them apart.

Annotations: a `scenes.jsonl` as written by `mmdialog synth`, one scene per line:
`{"image": "images/train/00000.png", "split": "train", "objects": [{"x": 0.17, "y": 0.5, "colour": "blue",
"shape": "cross", ...}, ...]}` with x and y the object's centre as fractions of the image's side.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from encoders.vision import VisionEncoder
from mmdialog.errors import ConfigError
from mmdialog.settings import VisionPretrainingSettings

log = logging.getLogger(__name__)
NOTHING = "<nothing>"  # the label of a patch where no object is centred


@dataclass
class AnnotatedImages:
    pixels: torch.Tensor  # (N, 3, H, W), preprocessed for the tower
    labels: torch.Tensor  # (N, attributes, grid * grid), indices into each attribute's vocabulary


def read_scenes(path: Path, split: str) -> list[dict]:
    if not path.is_file():
        raise ConfigError(f"train.vision_pretraining.scenes: no file {path} (mmdialog synth writes scenes.jsonl)")
    scenes = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [s for s in scenes if s.get("split", split) == split]


def vocabularies(scenes: list[dict], attributes: list[str]) -> dict[str, list[str]]:
    """Each attribute's values as found in the scenes, sorted, after the "nothing" label (index 0)."""
    try:
        return {a: [NOTHING, *sorted({str(o[a]) for s in scenes for o in s["objects"]})] for a in attributes}
    except KeyError as missing:
        raise ConfigError(f"train.vision_pretraining: an object in the scenes has no attribute {missing}") from None


def patch_labels(scene: dict, grid: int, vocab: dict[str, list[str]]) -> torch.Tensor:
    """(attributes, grid * grid): for every patch, the attributes of the object centred in it, row by row."""
    labels = torch.zeros(len(vocab), grid * grid, dtype=torch.long)
    for item in scene["objects"]:
        cell = min(int(item["y"] * grid), grid - 1) * grid + min(int(item["x"] * grid), grid - 1)
        for row, (attribute, values) in enumerate(vocab.items()):
            labels[row, cell] = values.index(str(item[attribute]))
    return labels


def annotate(vision: VisionEncoder, scenes: list[dict], root: Path, vocab: dict[str, list[str]],
             chunk: int = 256) -> AnnotatedImages:
    grid = math.isqrt(vision.num_patches)
    if grid * grid != vision.num_patches:
        raise ConfigError(f"vision pretraining needs a square patch grid; this tower gives {vision.num_patches}")
    pixels = [vision.preprocess([root / s["image"] for s in scenes[i:i + chunk]])
              for i in range(0, len(scenes), chunk)]
    labels = torch.stack([patch_labels(s, grid, vocab) for s in scenes])
    return AnnotatedImages(torch.cat(pixels), labels)


def hue_rotation(angle: torch.Tensor) -> torch.Tensor:
    """(B,) angles in radians -> (B, 3, 3) RGB matrices turning every hue by that angle about the grey axis
    (greys stay grey, so the pale backgrounds keep their look)."""
    axis = torch.full((3,), 3 ** -0.5)
    cross = torch.tensor([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    return cos * torch.eye(3) + sin * cross + (1 - cos) * torch.outer(axis, axis)


def recolour(pixels: torch.Tensor, labels: torch.Tensor, share: float, colour_row: int, mean: torch.Tensor,
             std: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn the hues of a random `share` of the images and drop their colour labels.

    Every shape then appears in hues its training colours never had, so the shape features cannot lean on
    colour: a pairing held out of training is recognised by its shape like any other. Nothing is learned
    about colour names from these images (their labels are ignored), only that shape does not depend on them.
    """
    chosen = torch.rand(len(pixels), generator=generator) < share
    if not chosen.any():
        return pixels, labels
    angles = torch.rand(int(chosen.sum()), generator=generator) * 2 * math.pi
    mean, std = mean[:, None, None], std[:, None, None]
    plain = pixels[chosen] * std + mean  # back to [0, 1] RGB
    turned = torch.einsum("bij,bjhw->bihw", hue_rotation(angles), plain).clamp(0, 1)
    pixels, labels = pixels.clone(), labels.clone()
    pixels[chosen] = (turned - mean) / std
    labels[chosen, colour_row] = -100  # cross_entropy's ignore_index
    return pixels, labels


class AttributeHead(nn.Module):
    """A linear classifier over one slice of the patch features."""

    def __init__(self, features: slice, values: int):
        super().__init__()
        self.features = features
        self.linear = nn.Linear(features.stop - features.start, values)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features[..., self.features])


def attribute_heads(vision: VisionEncoder, vocab: dict[str, list[str]], from_pooled: list[str]) -> nn.ModuleList:
    """One head per attribute. Those named in `from_pooled` read only the early, pooled channels and the others
    only the chosen layer's, so that a colour is named from the region's colours and never from its shape
    (a pairing of the two that training never showed is then no harder than any other)."""
    groups = vision.channel_groups()
    unknown = sorted(set(from_pooled) - set(vocab))
    if unknown:
        raise ConfigError(f"train.vision_pretraining.from_pooled_layers: no attribute {unknown[0]!r} in the scenes")
    if from_pooled and "pooled" not in groups:
        raise ConfigError("train.vision_pretraining.from_pooled_layers needs vision.pooled_layers on a "
                          "convolutional tower")
    if not from_pooled:
        return nn.ModuleList(AttributeHead(slice(0, vision.hidden_size), len(values)) for values in vocab.values())
    return nn.ModuleList(AttributeHead(groups["pooled" if name in from_pooled else "chosen"], len(values))
                         for name, values in vocab.items())


def patch_logits(vision: VisionEncoder, heads: nn.ModuleList, pixels: torch.Tensor) -> list[torch.Tensor]:
    """Each head's (B, patches, values) logits, on the CPU; the images go to wherever the tower is."""
    features = vision(pixels.to(next(vision.parameters()).device))  # (B, patches, hidden)
    return [head(features).cpu() for head in heads]


def combination_codes(labels: torch.Tensor, vocab: dict[str, list[str]]) -> torch.Tensor:
    """(N, attributes, patches) -> (N, patches): one number per patch for its whole combination of attributes."""
    codes = torch.zeros_like(labels[:, 0])
    for index, values in enumerate(vocab.values()):
        codes = codes * len(values) + labels[:, index]
    return codes


def patch_accuracy(vision: VisionEncoder, heads: nn.ModuleList, data: AnnotatedImages, vocab: dict[str, list[str]],
                   seen: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    """Per attribute, the share of patches holding an object whose attribute is predicted right; and the same
    over objects whose combination of attributes (`seen`: their combination_codes) training never showed."""
    was_training = vision.training
    vision.eval()
    with torch.no_grad():
        logits = [patch_logits(vision, heads, data.pixels[start:start + batch_size])
                  for start in range(0, len(data.pixels), batch_size)]
    vision.train(was_training)
    objects = data.labels[:, 0] > 0
    groups = {"patch_accuracy": objects,
              "patch_accuracy_new_combinations": objects & ~torch.isin(combination_codes(data.labels, vocab), seen)}
    report = {}
    for index, name in enumerate(vocab):
        hit = torch.cat([chunk[index].argmax(-1) for chunk in logits]) == data.labels[:, index]
        for group, where in groups.items():
            if where.any():
                report[f"{group}/{name}"] = float(hit[where].float().mean())
    return report


def pretrain_vision(vision: VisionEncoder, settings: VisionPretrainingSettings, seed: int = 0) -> dict[str, float]:
    """Train `vision` in place on the annotated scenes; returns the held-out patch accuracy per attribute."""
    path = Path(settings.scenes)
    train_scenes, held_out = read_scenes(path, "train"), read_scenes(path, settings.eval_split)
    if not train_scenes:
        raise ConfigError(f"train.vision_pretraining.scenes: {path} has no scene in the 'train' split")
    vocab = vocabularies(train_scenes, settings.attributes)
    if settings.recolour and "colour" not in vocab:
        raise ConfigError("train.vision_pretraining.recolour turns hues and drops colour labels: it needs a "
                          "'colour' attribute in train.vision_pretraining.attributes")
    started = time.perf_counter()
    train = annotate(vision, train_scenes, path.parent, vocab)
    check = annotate(vision, held_out[:512], path.parent, vocab) if held_out else None
    generator = torch.Generator().manual_seed(seed)
    heads = attribute_heads(vision, vocab, settings.from_pooled_layers)
    heads.to(next(vision.parameters()).device)
    # Stage one trains the whole tower even when dialogue training will keep it frozen.
    flags = {name: p.requires_grad for name, p in vision.named_parameters()}
    vision.requires_grad_(True)
    optimizer = torch.optim.AdamW([*vision.parameters(), *heads.parameters()], lr=settings.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.lr, total_steps=settings.steps, pct_start=0.1)
    colour_row = list(vocab).index("colour") if settings.recolour else None
    mean, std = (torch.tensor(getattr(vision.processor, name), dtype=torch.float32)
                 for name in ("image_mean", "image_std"))
    vision.train()
    for _ in range(settings.steps):
        rows = torch.randint(0, len(train.pixels), (settings.batch_size,), generator=generator)
        pixels, labels = train.pixels[rows], train.labels[rows]
        if colour_row is not None:
            pixels, labels = recolour(pixels, labels, settings.recolour, colour_row, mean, std, generator)
        logits = patch_logits(vision, heads, pixels)
        loss = sum(F.cross_entropy(item.flatten(0, 1), labels[:, index].flatten())
                   for index, item in enumerate(logits))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    optimizer.zero_grad(set_to_none=True)
    for name, param in vision.named_parameters():
        param.requires_grad_(flags[name])
    report = {"loss": float(loss.detach()), "seconds": time.perf_counter() - started}
    if check is not None:
        seen = combination_codes(train.labels, vocab)[train.labels[:, 0] > 0].unique()
        report.update(patch_accuracy(vision, heads, check, vocab, seen))
    log.info("vision pretraining: %s", report)
    return report
