"""The benchmark's results on disk: one JSON with every number, one PNG with the comparisons that matter."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and kiosks
import matplotlib.pyplot as plt  # noqa: E402


def _median(report: dict, scenario: str, side: str, stage: str) -> float:
    stages = report["scenarios"][scenario][side]["stages_ms"]
    return stages[stage]["median"] if stage in stages else float("nan")


def _ttfa_stage(report: dict) -> str:
    first = next(iter(report["scenarios"].values()))["ours"]["stages_ms"]
    return "ttfa" if "ttfa" in first else "total"  # without a voice, the reply's end is its first output


def write_report(report: dict, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "bench.json"
    data.write_text(json.dumps(report, indent=1), encoding="utf-8")
    stage = _ttfa_stage(report)
    names = list(report["scenarios"])
    figure, (bars, growth) = plt.subplots(1, 2, figsize=(13, 4.5))
    x = range(len(names))
    for offset, side in ((-0.2, "ours"), (0.2, "naive")):
        bars.bar([i + offset for i in x], [_median(report, n, side, stage) for n in names], width=0.4, label=side)
    bars.set_xticks(list(x), names, rotation=30, ha="right")
    bars.set_ylabel(f"median {stage} (ms)")
    bars.set_title("Time to first audio, ours vs the naive cascade")
    bars.legend()
    audio = sorted((s["audio_seconds"], n) for n, s in report["scenarios"].items() if n.startswith("audio_"))
    for side in ("ours", "naive"):
        growth.plot([a for a, _ in audio], [_median(report, n, side, stage) for _, n in audio], marker="o",
                    label=side)
    growth.set_xlabel("audio length (s)")
    growth.set_ylabel(f"median {stage} (ms)")
    growth.set_title("Cost against audio length")
    growth.legend()
    figure.tight_layout()
    plot = folder / "bench.png"
    figure.savefig(plot, dpi=100)
    plt.close(figure)
    return data, plot
