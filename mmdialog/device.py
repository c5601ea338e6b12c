"""Where the model runs and in which precision: the GPU when there is one, fp32 on the CPU."""

from __future__ import annotations

import contextlib

import torch

from mmdialog.errors import ConfigError
from mmdialog.settings import RuntimeSettings


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 itself (AVX512-BF16 or AMX). Without either, bf16 autocast is
    emulated: the demo recipe's steps took 7.4 s instead of 0.3 s in fp32 on an AVX2-only EPYC."""
    # torch's own CPU feature checks; private names, so looked up with a default should a release drop them.
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_device(settings: RuntimeSettings) -> torch.device:
    if settings.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(settings.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device={settings.device} but no CUDA GPU is available; use cpu or auto")
    return device


PRECISIONS = ("auto", "no", "fp32", "fp16", "bf16")


def precision_setting(value: str, key: str) -> str:
    """A precision setting checked against PRECISIONS. YAML reads a bare `no` as the boolean false, which a
    string setting receives as "False": that is "no" too, never an unknown value that falls back to bf16."""
    value = "no" if str(value).lower() == "false" else str(value)
    if value not in PRECISIONS:
        raise ConfigError(f"{key}: '{value}' is not a precision; allowed: {', '.join(PRECISIONS)}")
    return value


def autocast_dtype(settings: RuntimeSettings, device: torch.device) -> torch.dtype | None:
    """bf16 (fp16 on GPUs without it) under autocast on CUDA; None (plain fp32) on the CPU."""
    precision = precision_setting(settings.precision, "runtime.precision")
    if device.type != "cuda" or precision in ("fp32", "no"):
        return None
    if precision == "fp16":
        return torch.float16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def inference_context(settings: RuntimeSettings, device: torch.device) -> contextlib.AbstractContextManager:
    dtype = autocast_dtype(settings, device)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def configure_threads(settings: RuntimeSettings) -> None:
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
