"""The loss curve as a PNG beside the checkpoints, for a glance without TensorBoard."""

from __future__ import annotations

from pathlib import Path


def plot_losses(train: list[tuple[int, float]], evaluation: list[tuple[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        axes.plot(*zip(*train, strict=True), label="training loss", linewidth=1)
    if evaluation:
        axes.plot(*zip(*evaluation, strict=True), "o-", label="validation loss")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("cross-entropy per token")
    axes.set_yscale("log")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
