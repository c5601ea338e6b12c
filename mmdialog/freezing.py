"""Freezing is configuration: each component is `frozen`, `lora` (peft adapters) or `full`."""

from __future__ import annotations

from torch import nn

from mmdialog.errors import ConfigError
from mmdialog.settings import Freeze, LoraSettings

# The attention query/value projections, named as each supported architecture names them
# (T5, BART / CLIP / SigLIP / ViT-style, openai-whisper); LoRA on q and v is the original paper's choice.
_ATTENTION_PROJECTIONS = (("q", "v"), ("q_proj", "v_proj"), ("query", "value"))


def lora_target_modules(module: nn.Module, settings: LoraSettings) -> list[str]:
    if settings.target_modules:
        return list(settings.target_modules)
    linear_names = {name.rsplit(".", 1)[-1] for name, m in module.named_modules() if isinstance(m, nn.Linear)}
    for names in _ATTENTION_PROJECTIONS:
        if set(names) <= linear_names:
            return list(names)
    raise ConfigError(
        f"cannot tell which layers of {type(module).__name__} to adapt with LoRA; "
        f"set lora.target_modules (its linear layers: {', '.join(sorted(linear_names)[:12])})"
    )


def apply_freeze_policy(module: nn.Module, freeze: Freeze, lora: LoraSettings) -> None:
    """Set which parameters of `module` train; for `lora`, inject adapters (the only trainable part)."""
    if freeze == Freeze.full:
        module.requires_grad_(True)
        return
    module.requires_grad_(False)
    if freeze == Freeze.lora:
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=lora_target_modules(module, lora),
        )
        inject_adapter_in_model(config, module)


def lora_state_dict(module: nn.Module) -> dict:
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(module)


def load_lora_state_dict(module: nn.Module, state: dict) -> list[str]:
    """Load adapter weights; returns the adapter keys that the file did not provide."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(module, state)
    return [k for k in result.missing_keys if "lora_" in k]
