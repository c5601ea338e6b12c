"""Run by test_ddp.py (and test_dpo.py), alone or under `accelerate launch`: trains the tiny model a few steps
and writes which examples this process saw and the weights it ended with. Arguments after the step count
are config overrides."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from safetensors.torch import save_file

from mmdialog.config import load_config
from mmdialog.data.dataset import DialogueDataset
from mmdialog.training.trainer import Trainer


def main(data: str, output: str, batch_size: int, steps: int, *overrides: str) -> None:
    cfg = load_config("tiny", [
        f"train.data={data}", f"train.output_dir={output}", f"train.batch_size={batch_size}",
        f"train.max_steps={steps}", "train.save_every=1000", "train.lr_projector=3e-3", "train.lr_full=3e-3",
        "speech.mode=features", "decoder.config.dropout_rate=0.0",
        # Some gradients are zero in exact arithmetic (attention key biases) and ~1e-10 of summation-order
        # noise in practice; Adam with eps 1e-8 would turn that noise into full-size steps of either sign.
        "train.adam_eps=1e-6",
        # fp32 in both runs: auto picks bf16 on CPUs that compute it natively, and bf16 rounding is far above 1e-5.
        "train.mixed_precision=no", *overrides,
    ])
    seen: list[int] = []
    original = DialogueDataset.__getitem__

    def recording(self, index):
        seen.append(index)
        return original(self, index)

    DialogueDataset.__getitem__ = recording
    trainer = Trainer(cfg)
    trainer.train()
    rank = trainer.accelerator.process_index
    model = trainer.accelerator.unwrap_model(trainer.model)
    weights = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(weights, str(Path(output) / f"weights-rank{rank}.safetensors"))
    (Path(output) / f"seen-rank{rank}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:])
