"""AdamW with a learning rate per kind of parameter, and the warmup + decay schedule."""

from __future__ import annotations

import torch
from torch import nn
from transformers import get_scheduler

from mmdialog.settings import Schedule, TrainSettings

_SCHEDULER_NAMES = {Schedule.cosine: "cosine", Schedule.linear: "linear", Schedule.constant: "constant_with_warmup"}


def parameter_kind(name: str) -> str:
    """projector (fusion layers), lora (adapters) or full (a fully trained component's own weights)."""
    if name.startswith("fusion."):
        return "projector"
    return "lora" if "lora_" in name else "full"


def _decays(name: str, param: nn.Parameter) -> bool:
    # Weight decay on matrices only: decaying biases, norms and embeddings hurts and helps nothing.
    lowered = name.lower()
    return param.ndim >= 2 and "norm" not in lowered and "embed" not in lowered and "queries" not in lowered


def parameter_groups(model: nn.Module, settings: TrainSettings) -> list[dict]:
    rates = {"projector": settings.lr_projector, "lora": settings.lr_lora, "full": settings.lr_full}
    # A projector that came trained (BLIP-2's Q-Former) is fine-tuned like a trained component, not at the
    # rate that fits a new projector (which would wreck it in a few steps).
    trained_elsewhere = {id(p) for m in model.modules() if getattr(m, "trained_elsewhere", False)
                         for p in m.parameters()}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            kind = "full" if id(param) in trained_elsewhere else parameter_kind(name)
            groups.setdefault((kind, _decays(name, param)), []).append(param)
    return [
        {"params": params, "lr": rates[kind], "weight_decay": settings.weight_decay if decays else 0.0,
         "name": f"{kind}{'' if decays else '/no-decay'}"}
        for (kind, decays), params in sorted(groups.items())
    ]


def build_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    return torch.optim.AdamW(parameter_groups(model, settings), eps=settings.adam_eps)


def build_scheduler(optimizer: torch.optim.Optimizer, settings: TrainSettings, total_steps: int):
    return get_scheduler(_SCHEDULER_NAMES[settings.schedule], optimizer,
                         num_warmup_steps=settings.warmup_steps, num_training_steps=total_steps)
