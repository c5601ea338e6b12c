"""Re-save a trained model folder with half-precision weights, for shipping inside the package.

    python -m mmdialog.ship runs/demo/best configs/demo_model
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from mmdialog.model import MultimodalDialogueModel


def ship(source: Path, destination: Path) -> int:
    """Returns the size in bytes of the written folder."""
    model = MultimodalDialogueModel.from_pretrained(source)
    model.save_pretrained(destination, dtype=torch.float16)
    return sum(p.stat().st_size for p in destination.rglob("*") if p.is_file())


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m mmdialog.ship TRAINED_MODEL_DIR DESTINATION_DIR")
    size = ship(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"wrote {sys.argv[2]} ({size / 1e6:.1f} MB)")
