"""Helpers shared by tests that need a small trained model."""

from __future__ import annotations

from pathlib import Path

import torch

from mmdialog.config import load_config
from mmdialog.model import MultimodalDialogueModel
from mmdialog.synth.render import render_scene
from mmdialog.synth.scenes import COLOURS as WORLD_COLOURS
from mmdialog.synth.scenes import Background, Scene, SceneObject
from mmdialog.training.trainer import Trainer


def train_tiny(data: Path, output: Path, steps: int = 300, *overrides: str) -> MultimodalDialogueModel:
    """Train the tiny preset on `data` (features-only speech, no dropout) and return the model, in eval mode."""
    cfg = load_config("tiny", [
        f"train.data={data}", f"train.output_dir={output}", "train.batch_size=8", f"train.max_steps={steps}",
        "train.lr_projector=5e-3", "train.lr_full=5e-3", "train.warmup_steps=10", "train.save_every=100000",
        "train.log_every=50", "speech.mode=features", "decoder.config.dropout_rate=0.0",
        "generation.max_new_tokens=64", "dialogue.max_target_tokens=64", *overrides,
    ])
    # One torch thread: with two, a busy second core makes OpenMP's threads wait on each other (measured
    # 50x slower); the tiny model gains nothing from the second thread anyway.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer(cfg).train()
    finally:
        torch.set_num_threads(threads)
    return MultimodalDialogueModel.from_pretrained(output / "model").eval()


def scene_object(colour: str, shape: str, column: int, y: float = 0.5) -> SceneObject:
    """A large object of the synthetic world, centred in its column (0 left, 1 middle, 2 right)."""
    return SceneObject(colour, shape, "large", column, (0.17, 0.5, 0.83)[column], y, 0.13, WORLD_COLOURS[colour])


def draw_scene(path: Path, *objects: SceneObject) -> Path:
    """A new picture in the synthetic world's style (not one of its files): the demo model must read it."""
    background = Background("solid", (235, 235, 235), (235, 235, 235), "vertical", 0.0, 0)
    render_scene(Scene(tuple(objects), background)).save(path)
    return path


def circle_scene(folder: Path, colour: str) -> Path:
    """A `colour` circle on the left and a star on the right: "what color is the circle?" has one answer."""
    star = "purple" if colour != "purple" else "orange"
    return draw_scene(folder / f"{colour}.png", scene_object(colour, "circle", 0), scene_object(star, "star", 2))
