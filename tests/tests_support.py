"""Helpers shared by tests that need a small trained model."""

from __future__ import annotations

from pathlib import Path

import torch

from mmdialog.config import load_config
from mmdialog.model import MultimodalDialogueModel
from mmdialog.synth.render import draw, placed
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


def circle_scene(folder: Path, colour: str) -> Path:
    """A `colour` circle on the left and a star on the right: "what color is the circle?" has one answer."""
    star = "purple" if colour != "purple" else "orange"
    return draw(folder / f"{colour}.png", placed(colour, "circle", 0), placed(star, "star", 2))
