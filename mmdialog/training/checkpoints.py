"""Training checkpoints: written whole or not at all, the last K kept beside the best, resumable.

A checkpoint folder `checkpoints/step-000120/` holds accelerate's state (trainable weights, optimizer,
scheduler, RNG of every process), `trainer_state.json` (step, epoch, data position, losses) and `model/`,
a model folder `mmdialog` can load by itself. It is written under a temporary name and renamed when
complete, so a process killed mid-write never leaves a checkpoint that looks valid but is not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

_STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.json"


@dataclass
class TrainerState:
    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches this process consumed in `epoch`
    best_eval_loss: float | None = None
    best_step: int | None = None
    evaluations_without_improvement: int = 0
    train_losses: list[tuple[int, float]] = field(default_factory=list)
    eval_losses: list[tuple[int, float]] = field(default_factory=list)

    def save(self, folder: Path) -> None:
        (folder / STATE_FILE).write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> TrainerState:
        data = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        data["train_losses"] = [tuple(x) for x in data.get("train_losses", [])]
        data["eval_losses"] = [tuple(x) for x in data.get("eval_losses", [])]
        return cls(**data)


def checkpoint_root(output_dir: Path) -> Path:
    return output_dir / "checkpoints"


def staging_folder(output_dir: Path, step: int) -> Path:
    return checkpoint_root(output_dir) / f".incomplete-step-{step:06d}"


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Finished checkpoints, oldest first (incomplete ones never match the name pattern)."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found) if (p / STATE_FILE).is_file()]


def publish(staging: Path, output_dir: Path, step: int) -> Path:
    """Rename a fully written staging folder to its final name (atomic on one filesystem)."""
    final = checkpoint_root(output_dir) / f"step-{step:06d}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    return final


def prune(output_dir: Path, keep_last: int, best_step: int | None) -> None:
    """Delete old checkpoints, keeping the newest `keep_last` and the best one."""
    checkpoints = complete_checkpoints(output_dir)
    keep = set(checkpoints[-keep_last:]) if keep_last > 0 else set()
    if best_step is not None:
        keep |= {p for p in checkpoints if p.name == f"step-{best_step:06d}"}
    for path in checkpoints:
        if path not in keep:
            shutil.rmtree(path, ignore_errors=True)
    for leftover in checkpoint_root(output_dir).glob(".incomplete-step-*"):
        shutil.rmtree(leftover, ignore_errors=True)
