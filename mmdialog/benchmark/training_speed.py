"""Training throughput of a preset's fused model: optimizer steps per second on typed + picture dialogues.

The same step as `mmdialog train` (its loss, optimizer groups and accelerate's mixed precision), on a
small synthetic world made on the spot, so it runs anywhere, random-weight shapes included.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from mmdialog.data.dataset import DialogueDataset, collate
from mmdialog.data.format import load_dialogues
from mmdialog.loading import load_model
from mmdialog.settings import MmdialogConfig
from mmdialog.synth import generate_world
from mmdialog.training.optim import build_optimizer
from mmdialog.training.trainer import mixed_precision, token_loss, trains_on_cpu

WARM_UP_STEPS = 3  # kernels chosen, caches filled: not what a long run pays per step


def training_speed(config: MmdialogConfig, steps: int = 20, batch_size: int = 8) -> dict:
    on_cpu = trains_on_cpu(config)
    accelerator = Accelerator(cpu=on_cpu, mixed_precision=mixed_precision(config.train.mixed_precision, not on_cpu))
    model = load_model(config)
    with tempfile.TemporaryDirectory() as folder:
        generate_world(Path(folder), seed=0, scenes_train=max(8, batch_size), scenes_valid=1, scenes_test=1,
                       spoken=False, progress=False)
        dialogues, _ = load_dialogues(Path(folder) / "train.jsonl")
        loader = DataLoader(DialogueDataset(dialogues, model), batch_size=batch_size, shuffle=True,
                            collate_fn=collate, drop_last=True)
        optimizer = build_optimizer(model, config.train)
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        model.train()
        seconds: list[float] = []
        while len(seconds) < steps + WARM_UP_STEPS:
            for batch in loader:
                started = time.perf_counter()
                loss, _, _ = token_loss(model, batch, accelerator)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
                if accelerator.device.type == "cuda":
                    torch.cuda.synchronize()
                seconds.append(time.perf_counter() - started)
                if len(seconds) >= steps + WARM_UP_STEPS:
                    break
    timed = seconds[WARM_UP_STEPS:]
    median = statistics.median(timed)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"device": str(accelerator.device), "mixed_precision": accelerator.mixed_precision,
            "batch_size": batch_size, "steps": len(timed), "step_seconds_median": median,
            "steps_per_second": 1.0 / median, "examples_per_second": batch_size / median,
            "trainable_parameters": trainable}
