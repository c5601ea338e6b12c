"""Helpers shared by tests that need a small trained model."""

from __future__ import annotations

from pathlib import Path

from mmdialog.config import load_config
from mmdialog.model import MultimodalDialogueModel
from mmdialog.training.trainer import Trainer


def train_tiny(data: Path, output: Path, steps: int = 300, *overrides: str) -> MultimodalDialogueModel:
    """Train the tiny preset on `data` (features-only speech, no dropout) and return the model, in eval mode."""
    cfg = load_config("tiny", [
        f"train.data={data}", f"train.output_dir={output}", "train.batch_size=8", f"train.max_steps={steps}",
        "train.lr_projector=5e-3", "train.lr_full=5e-3", "train.warmup_steps=10", "train.save_every=100000",
        "train.log_every=50", "speech.mode=features", "decoder.config.dropout_rate=0.0",
        "generation.max_new_tokens=64", "dialogue.max_target_tokens=64", *overrides,
    ])
    trainer = Trainer(cfg)
    trainer.train()
    return MultimodalDialogueModel.from_pretrained(output / "model").eval()
