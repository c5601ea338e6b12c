"""Real DDP with two CPU processes (gloo) through `accelerate launch`, against one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from data_factory import write_colour_dataset
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("ddp_worker.py")


def run(command: list[str], cwd: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), str(WORKER.parent)]),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_double_batch(tmp_path):
    data = write_colour_dataset(tmp_path / "data", dialogues=24, seed=0)
    steps = 4  # 4 steps x 8 examples: no partial last batch, which accelerate would even out by repeating
    run([sys.executable, str(WORKER), str(data), str(tmp_path / "single"), "8", str(steps)], tmp_path)
    accelerate = Path(sys.executable).with_name("accelerate")
    run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
         str(WORKER), str(data), str(tmp_path / "ddp"), "4", str(steps)], tmp_path)

    # The loaders fetch one batch ahead (to know when an epoch ends): count only the trained ones.
    seen = [json.loads((tmp_path / "ddp" / f"seen-rank{r}.json").read_text())[: steps * 4] for r in (0, 1)]
    single_seen = json.loads((tmp_path / "single" / "seen-rank0.json").read_text())[: steps * 8]
    assert seen[0] and seen[1] and not set(seen[0]) & set(seen[1]), "the ranks must see different samples"
    assert sorted(seen[0] + seen[1]) == sorted(single_seen)

    rank0 = load_file(tmp_path / "ddp" / "weights-rank0.safetensors")
    rank1 = load_file(tmp_path / "ddp" / "weights-rank1.safetensors")
    single = load_file(tmp_path / "single" / "weights-rank0.safetensors")
    assert all(torch.equal(rank0[n], rank1[n]) for n in rank0), "the ranks' weights must be identical"
    worst = max((rank0[n] - single[n]).abs().max().item() for n in rank0)
    print(f"largest difference DDP vs single process: {worst:.2e}")
    assert worst <= 1e-5
