"""A training run killed with SIGKILL (no chance to clean up) resumes with `--resume` to the same result.

The kill comes while a checkpoint is being written, the worst moment: the half-written one must never
replace the last good one, and the resumed run must end where an uninterrupted run ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from data_factory import write_colour_dataset
from safetensors.torch import load_file

from mmdialog.training.checkpoints import STATE_FILE, checkpoint_root, complete_checkpoints

STEPS, SAVE_EVERY = 24, 4


def train_command(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mmdialog.cli", "train", "--config", "tiny", *extra,
            f"train.data={data}", f"train.output_dir={out}", "train.batch_size=4", "train.lr_projector=5e-3",
            "train.lr_full=5e-3", "train.log_every=2", f"train.save_every={SAVE_EVERY}", f"train.max_steps={STEPS}",
            "speech.mode=features"]


def run_to_the_end(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=quiet_env())
    assert done.returncode == 0, done.stderr[-3000:]


def quiet_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def kill_while_a_checkpoint_is_written(command: list[str], out: Path) -> str:
    """Start training and SIGKILL it the moment a checkpoint after the first one is being written (or, if
    that moment is missed, just after it was published: mid-way through the next steps)."""
    root = checkpoint_root(out)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=quiet_env())
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and process.poll() is None:
            names = [p.name for p in root.iterdir()] if root.is_dir() else []
            if any(n.startswith(".incomplete-step-") and int(n[-6:]) > SAVE_EVERY for n in names):
                moment = "while writing a checkpoint"
                break
            if len(complete_checkpoints(out)) >= 2:
                moment = "between checkpoints"
                break
            time.sleep(0.002)
        else:
            pytest.fail(f"training ended before it could be killed: {process.stderr.read()[-2000:]!r}")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL
    return moment


def final_state(out: Path) -> tuple[list, dict[str, torch.Tensor]]:
    last = complete_checkpoints(out)[-1]
    state = json.loads((last / STATE_FILE).read_text())
    assert state["step"] == STEPS
    return state["train_losses"], load_file(out / "model" / "fusion.safetensors")


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_reaches_the_same_end(tmp_path):
    data = write_colour_dataset(tmp_path / "data", dialogues=24, seed=0)
    run_to_the_end(train_command(data, tmp_path / "straight"))
    straight_losses, straight_fusion = final_state(tmp_path / "straight")

    out = tmp_path / "killed"
    moment = kill_while_a_checkpoint_is_written(train_command(data, out), out)
    survivors = complete_checkpoints(out)
    assert survivors, "the first checkpoint was lost"
    for checkpoint in survivors:  # whatever was published is whole and loadable
        assert (checkpoint / STATE_FILE).is_file() and (checkpoint / "model" / "config.json").is_file()
    resumed_from = json.loads((survivors[-1] / STATE_FILE).read_text())["step"]
    print(f"killed {moment}; resuming from step {resumed_from}")
    assert resumed_from < STEPS

    run_to_the_end(train_command(data, out, "--resume"))
    losses, fusion = final_state(out)
    assert losses[-1][0] == straight_losses[-1][0] == STEPS
    assert abs(losses[-1][1] - straight_losses[-1][1]) < 1e-5, (losses[-1], straight_losses[-1])
    assert fusion.keys() == straight_fusion.keys()
    assert all(torch.allclose(fusion[k], straight_fusion[k], atol=1e-6) for k in fusion)
    assert not list(checkpoint_root(out).glob(".incomplete-*")), "a half-written checkpoint was left behind"
