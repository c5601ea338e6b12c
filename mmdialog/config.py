"""How presets, YAML files and `key.sub=value` overrides load into the schema (mmdialog/settings.py).

An unknown key or a value of the wrong type is reported as one line that names the key and what it
accepts, before any model loads.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mmdialog.errors import ConfigError
from mmdialog.settings import MmdialogConfig

DEFAULT_PRESET = "demo"


def preset_names() -> list[str]:
    """The presets shipped inside the installed `configs` package."""
    return sorted(p.name[:-5] for p in resources.files("configs").iterdir() if p.name.endswith(".yaml"))


def _preset_text(name: str) -> str:
    path = resources.files("configs").joinpath(f"{name}.yaml")
    if not path.is_file():
        raise ConfigError(
            f"config '{name}' is neither a preset ({', '.join(preset_names())}) nor an existing YAML file"
        )
    return path.read_text(encoding="utf-8")


def _allowed_keys(schema: Any, dotted: str) -> list[str]:
    """The field names allowed at the parent of `dotted` in the schema, for error messages."""
    node = schema
    for part in dotted.split(".")[:-1]:
        fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        if part not in fields:
            break
        node = getattr(node, part)
    if dataclasses.is_dataclass(node):
        return [f.name for f in dataclasses.fields(node)]
    return []


def _explain(exc: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(exc, "full_key", None) or ""
    message = str(exc).splitlines()[0]
    if "Key '" in message and "not in" in message:
        allowed = ", ".join(_allowed_keys(MmdialogConfig(), key)) or "see mmdialog/config.py"
        return ConfigError(f"{source}: unknown config key '{key}'; allowed here: {allowed}")
    if "Invalid value" in message or "Value '" in message:
        return ConfigError(f"{source}: bad value for '{key}': {message}")
    return ConfigError(f"{source}: {message}" + (f" (key '{key}')" if key else ""))


def _merge(base: DictConfig, text_or_list: Any, source: str) -> DictConfig:
    try:
        if isinstance(text_or_list, (str, DictConfig)):
            update = OmegaConf.create(text_or_list)
        else:
            update = OmegaConf.from_dotlist(list(text_or_list))
        if update is None:
            return base
        return OmegaConf.merge(base, update)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise _explain(exc, source) from None
    except Exception as exc:  # YAML syntax errors and the like
        raise ConfigError(f"{source}: cannot be read as YAML: {str(exc).splitlines()[0]}") from None


def _read_layers(source: str, seen: tuple[str, ...] = ()) -> list[DictConfig]:
    """The YAML layers of a config, base first: a file may say `extends: <preset or path>`."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"config file '{path}' does not exist")
        text, folder, key = path.read_text(encoding="utf-8"), path.parent, str(path.resolve())
    else:
        text, folder, key = _preset_text(source), Path(str(resources.files("configs"))), f"preset:{source}"
    if key in seen:
        raise ConfigError(f"config '{source}' extends itself (through {' -> '.join(seen)})")
    try:
        layer = OmegaConf.create(text) or OmegaConf.create({})
    except Exception as exc:
        raise ConfigError(f"{source}: cannot be read as YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(layer, DictConfig):
        raise ConfigError(f"{source}: a config must be a mapping of keys to values")
    parent = layer.pop("extends", None)
    # Relative paths are relative to the file that writes them (a preset's: the installed configs folder).
    _resolve_relative_paths(layer, folder)
    base = _read_layers(str(parent) if not str(parent).startswith(("./", "../")) else str(folder / parent),
                        (*seen, key)) if parent else []
    return [*base, layer]


def load_config(config: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> MmdialogConfig:
    """Load a preset name or YAML path (default: the offline demo preset) and apply `key.sub=value` overrides."""
    source = str(config) if config is not None else DEFAULT_PRESET
    merged = OmegaConf.structured(MmdialogConfig)
    for layer in _read_layers(source):
        merged = _merge(merged, layer, source)
    _check_override_syntax(overrides)
    return _to_config(_merge(merged, overrides, "override"))


def apply_overrides(cfg: MmdialogConfig, overrides: list[str] | tuple[str, ...]) -> MmdialogConfig:
    """A copy of `cfg` with `key.sub=value` overrides applied, validated like everything else."""
    _check_override_syntax(overrides)
    return _to_config(_merge(OmegaConf.structured(cfg), overrides, "override"))


def _check_override_syntax(overrides: list[str] | tuple[str, ...]) -> None:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key.sub=value")


def _to_config(merged: DictConfig) -> MmdialogConfig:
    try:
        result = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise _explain(exc, "config") from None
    assert isinstance(result, MmdialogConfig)
    return result


_PATH_KEYS = ("checkpoint", "speech.name", "vision.name", "text.name", "decoder.name", "decoder.tokenizer", "tts.voice",
              "tts.model_config", "tts.model_checkpoint", "train.data", "train.eval_data", "train.init_from",
              "train.output_dir", "train.vision_pretraining.scenes", "train.reference")


def _resolve_relative_paths(layer: DictConfig, folder: Path) -> None:
    """Paths written as ./x or ../x in a YAML file are relative to that file, not to the cwd."""
    for key in _PATH_KEYS:
        value = OmegaConf.select(layer, key, default=None)
        if isinstance(value, str) and value.startswith(("./", "../")):
            OmegaConf.update(layer, key, str((folder / value).resolve()), merge=False)


def config_to_dict(cfg: MmdialogConfig) -> dict[str, Any]:
    """A plain, JSON-ready dict of the config (enums as their values)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)  # type: ignore[return-value]


def config_from_dict(data: dict[str, Any], relative_to: Path | None = None) -> MmdialogConfig:
    """The inverse of `config_to_dict`, with the same validation as `load_config`; paths written as ./x or
    ../x are relative to the folder `relative_to` (a model folder's config.json: so the folder can move)."""
    layer = OmegaConf.create(data)
    if relative_to is not None:
        _resolve_relative_paths(layer, relative_to)
    return _to_config(_merge(OmegaConf.structured(MmdialogConfig), OmegaConf.to_yaml(layer), "config.json"))
