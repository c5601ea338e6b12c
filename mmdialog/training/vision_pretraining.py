"""Stage one for a vision tower trained from scratch: learn to see from annotated scenes, before any dialogue.

A tower that starts from random weights learns nothing useful from question answering alone for a long
time: the answer depends on one object among several, so the gradient reaching the tower is weak until the
decoder already knows where to look, and it cannot learn where to look until the tower tells objects apart.
Dense labels break that loop. Each patch of the tower's grid is labelled with the attributes of the object
whose centre lies in it (or "nothing"), and a linear head per attribute classifies every patch. A minute of
this gives patch features that name colour and shape where the object is, and dialogue training then only
has to learn to look them up. The attributes are predicted separately, so a colour-shape pair never drawn in
training is still two familiar answers.

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


def patch_logits(vision: VisionEncoder, heads: nn.ModuleList, pixels: torch.Tensor) -> list[torch.Tensor]:
    """Each head's (B, patches, values) logits, on the CPU; the images go to wherever the tower is."""
    features = vision(pixels.to(next(vision.parameters()).device))  # (B, patches, hidden)
    return [head(features).cpu() for head in heads]


def patch_accuracy(vision: VisionEncoder, heads: nn.ModuleList, data: AnnotatedImages, names: list[str],
                   batch_size: int = 256) -> dict[str, float]:
    """Per attribute, the share of patches holding an object whose attribute is predicted right."""
    was_training = vision.training
    vision.eval()
    right = torch.zeros(len(heads))
    objects = (data.labels[:, 0] > 0).sum().clamp(min=1)
    with torch.no_grad():
        for start in range(0, len(data.pixels), batch_size):
            labels = data.labels[start:start + batch_size]
            for index, logits in enumerate(patch_logits(vision, heads, data.pixels[start:start + batch_size])):
                hit = (logits.argmax(-1) == labels[:, index]) & (labels[:, index] > 0)
                right[index] += hit.sum()
    vision.train(was_training)
    return {f"patch_accuracy/{name}": float(right[index] / objects) for index, name in enumerate(names)}


def pretrain_vision(vision: VisionEncoder, settings: VisionPretrainingSettings, seed: int = 0) -> dict[str, float]:
    """Train `vision` in place on the annotated scenes; returns the held-out patch accuracy per attribute."""
    path = Path(settings.scenes)
    train_scenes, held_out = read_scenes(path, "train"), read_scenes(path, settings.eval_split)
    if not train_scenes:
        raise ConfigError(f"train.vision_pretraining.scenes: {path} has no scene in the 'train' split")
    vocab = vocabularies(train_scenes, settings.attributes)
    started = time.perf_counter()
    train = annotate(vision, train_scenes, path.parent, vocab)
    check = annotate(vision, held_out[:512], path.parent, vocab) if held_out else None
    generator = torch.Generator().manual_seed(seed)
    heads = nn.ModuleList(nn.Linear(vision.hidden_size, len(values)) for values in vocab.values())
    heads.to(next(vision.parameters()).device)
    # Stage one trains the whole tower even when dialogue training will keep it frozen.
    flags = {name: p.requires_grad for name, p in vision.named_parameters()}
    vision.requires_grad_(True)
    optimizer = torch.optim.AdamW([*vision.parameters(), *heads.parameters()], lr=settings.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.lr, total_steps=settings.steps, pct_start=0.1)
    vision.train()
    for _ in range(settings.steps):
        rows = torch.randint(0, len(train.pixels), (settings.batch_size,), generator=generator)
        logits = patch_logits(vision, heads, train.pixels[rows])
        loss = sum(F.cross_entropy(item.flatten(0, 1), train.labels[rows, index].flatten())
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
        report.update(patch_accuracy(vision, heads, check, list(vocab)))
    log.info("vision pretraining: %s", report)
    return report
