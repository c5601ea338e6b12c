"""save_pretrained / from_pretrained: a config.json plus safetensors of what has no other source.

Stored: the fusion layers always; a component's whole weights when it was built from a config (random or
trained: nothing else could restore it) or fully fine-tuned; its LoRA adapters when it was adapted.
Components loaded by hub name or path are referenced by that name, not copied. Nothing is unpickled.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from mmdialog.config import apply_overrides, config_from_dict, config_to_dict
from mmdialog.errors import CheckpointError, ConfigError
from mmdialog.freezing import load_lora_state_dict, lora_state_dict
from mmdialog.settings import Freeze, MmdialogConfig

if TYPE_CHECKING:
    from mmdialog.model import MultimodalDialogueModel

FORMAT = "mmdialog-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
FUSION_FILE = "fusion.safetensors"
TOKENIZER_DIR = "tokenizer"


def _stores_whole(settings) -> bool:
    return not settings.name or settings.freeze == Freeze.full


def _stored(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    tensor = tensor.detach().cpu().contiguous()
    return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor


def save_checkpoint(model: MultimodalDialogueModel, folder: Path, dtype: torch.dtype | None = None) -> None:
    """Write the checkpoint into a temp folder beside `folder`, then swap it in: never half a checkpoint.

    `dtype` (e.g. torch.float16) stores the weights smaller; loading casts them back to the model's dtype.
    """
    folder = folder.resolve()
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        config = config_to_dict(model.config)
        files = {"fusion": FUSION_FILE}
        save_file({k: _stored(v, dtype) for k, v in model.fusion.state_dict().items()}, staging / FUSION_FILE)
        for name in ("speech", "vision", "decoder"):
            settings = getattr(model.config, name)
            part = model.trainable_part(name) if name != "speech" or settings.name else model.speech.whisper
            if _stores_whole(settings):
                # save_model keeps tied weights (T5's shared embeddings) tied; a converted copy for dtype.
                save_model(copy.deepcopy(part).to(dtype) if dtype else part, str(staging / f"{name}.safetensors"))
                files[name] = f"{name}.safetensors"
            elif settings.freeze == Freeze.lora:
                state = {k: _stored(v, dtype) for k, v in lora_state_dict(part).items()}
                save_file(state, staging / f"{name}.lora.safetensors")
                files[name] = f"{name}.lora.safetensors"
        tokenizer_source = model.config.decoder.tokenizer or model.config.decoder.name
        if not model.config.decoder.name or tokenizer_source == "byt5" or Path(str(tokenizer_source)).exists():
            model.tokenizer.save_pretrained(str(staging / TOKENIZER_DIR))
            config["decoder"]["tokenizer"] = TOKENIZER_DIR
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "files": files, "config": config}
        (staging / CONFIG_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        # mkdtemp and safetensors create owner-only files; a model folder is meant to be shared and copied.
        for path in [staging, *staging.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        if folder.exists():
            backup = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(folder, backup)
            os.replace(staging, folder)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def is_checkpoint(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file()


def read_manifest(folder: Path) -> dict:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"'{folder}' is not a model folder: it has no {CONFIG_FILE}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"'{path}' is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not an mmdialog model config")
    return manifest


def _checked(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise CheckpointError(f"checkpoint file '{path}' is missing")
    return path


def _load_tensors(path: Path) -> dict:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint file '{path}' is damaged or truncated ({exc})") from None


def checkpoint_config(folder: Path) -> MmdialogConfig:
    """The config a model folder was saved with: its own tokenizer, and paths written ./x or ../x (a bundle's
    copies of the components) found relative to the folder."""
    folder = folder.resolve()
    data = read_manifest(folder)["config"]
    if data.get("decoder", {}).get("tokenizer") == TOKENIZER_DIR:
        data["decoder"]["tokenizer"] = str(folder / TOKENIZER_DIR)
    try:
        return config_from_dict(data, relative_to=folder)
    except ConfigError as exc:
        raise CheckpointError(f"'{folder / CONFIG_FILE}' has a bad config: {exc}") from None


def load_checkpoint(folder: Path, overrides: Sequence[str] = ()) -> MultimodalDialogueModel:
    from mmdialog.model import MultimodalDialogueModel

    folder = folder.resolve()
    manifest = read_manifest(folder)
    config = checkpoint_config(folder)
    if overrides:
        config = apply_overrides(config, overrides)
    model = MultimodalDialogueModel.from_config(config)
    files = manifest.get("files", {})
    _load_strict(model.fusion, _checked(folder, files.get("fusion", FUSION_FILE)))
    for name in ("speech", "vision", "decoder"):
        settings = getattr(config, name)
        part = model.trainable_part(name) if name != "speech" or settings.name else model.speech.whisper
        if name not in files:
            continue
        path = _checked(folder, files[name])
        if path.name.endswith(".lora.safetensors"):
            missing = load_lora_state_dict(part, _load_tensors(path))
            if missing:
                raise CheckpointError(f"checkpoint file '{path}' lacks LoRA weights such as {missing[0]}")
        else:
            _load_strict(part, path)
    model.eval()
    return model


def _load_strict(module, path: Path) -> None:
    try:
        missing, unexpected = load_model(module, str(path), strict=False)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint file '{path}' is damaged or does not fit the model ({exc})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint file '{path}' does not fit the model: "
            f"{len(missing)} missing and {len(unexpected)} unexpected tensors (e.g. {sorted(missing or unexpected)[0]})"
        )

