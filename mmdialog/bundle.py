"""`mmdialog bundle`: one folder that runs on an air-gapped machine with `mmdialog serve --config DIR/config.yaml`.

    DIR/config.yaml     the resolved config; every model path in it is ./models/...
    DIR/models/<part>/  a copy of each model: the checkpoint, Whisper, the vision tower, the decoder, the voice
    DIR/LICENSES/       the terms of every model copied (README.md: a table; one text file per model)

Paths are relative (to config.yaml, and to a model folder inside its config.json), so the folder can be moved or
copied anywhere. Licences are checked before a single file is needed, so a refusal costs nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mmdialog.config import config_to_dict, load_config
from mmdialog.errors import ConfigError, LicenceError, ModelNotAvailableError
from mmdialog.licences import Terms, known_terms, terms, write_licences
from mmdialog.model_refs import CHECKPOINT, CONFIG, Kind, ModelRef, required_models
from mmdialog.model_store import folder_size, locate
from mmdialog.settings import MmdialogConfig

CONFIG_FILE = "config.yaml"
MODELS, LICENSES = "models", "LICENSES"


def _refuse_non_commercial(checked: list[tuple[ModelRef, Terms]], accepted: bool) -> None:
    if accepted:
        return
    problems = [f"{ref.describe()} is under non-commercial terms ({found.summary}): pass --accept-non-commercial "
                "to bundle it anyway, for non-commercial use only." for ref, found in checked if found.non_commercial]
    if problems:
        raise LicenceError("\n".join(problems))


def _located(refs: list[ModelRef], source: str) -> list[tuple[ModelRef, Path]]:
    """Every model's local files (with what must travel beside them), or one sentence per model that is not here."""
    located, problems = [], []
    for ref in refs:
        try:
            path = locate(ref, source)
            if ref.kind == Kind.coqui:
                _coqui_files(ref, path)  # a voice a moved bundle cannot load is refused before anything is copied
            else:
                _companions(ref, path)
            located.append((ref, path))
        except ModelNotAvailableError as exc:
            problems.extend(exc.problems)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ModelNotAvailableError(problems)
    return located


def _folder_name(ref: ModelRef, taken: set[str]) -> str:
    """models/<role>-<name>, readable and unique: speech-tiny.en, vision-Salesforce--blip2-flan-t5-xl."""
    name = ref.label.removeprefix("bundled:")
    base = f"{ref.role}-{re.sub(r'[^A-Za-z0-9._-]+', '--', name).strip('-.') or 'model'}"
    folder, n = base, 1
    while folder in taken:
        n += 1
        folder = f"{base}-{n}"
    taken.add(folder)
    return folder


def _companions(ref: ModelRef, file: Path) -> list[tuple[Path, str]]:
    """Files a model file needs beside it: a Piper voice's JSON config (read as `<voice>.onnx.json`) and card."""
    if ref.role != "voice" or file.suffix != ".onnx":
        return []
    from decoders.tts.factory import piper_voice_files

    _, config = piper_voice_files(ref.name if ref.kind == Kind.bundled else str(file))
    if not config.is_file():
        raise ModelNotAvailableError([f"{ref.describe()} is not usable: its config '{config}' does not exist."])
    card = file.parent / "MODEL_CARD"
    return [(config, f"{file.name}.json"), *([(card, card.name)] if card.is_file() else [])]


def _copy(ref: ModelRef, source: Path, folder: Path) -> Path:
    """Copy a model into `folder`; returns what its config keys point at there (the folder, or the main file)."""
    if source.is_dir():
        shutil.copytree(source, folder)  # links followed: huggingface_hub's snapshots are links to blobs
        return folder
    folder.mkdir(parents=True)
    for file, name in [(source, source.name), *_companions(ref, source)]:
        shutil.copy2(file, folder / name)
    return folder / source.name


def _coqui_files(ref: ModelRef, folder: Path) -> dict[str, Path | None]:
    """A released Coqui model in `folder` as a local one (tts.model_config + tts.model_checkpoint), the files as
    Coqui picks them; XTTS reads its vocabulary and speakers from the checkpoint's folder, so a copy is complete."""
    from TTS.utils.manage import ModelManager

    from decoders.tts.coqui import needed_models

    if len(needed_models(ref.name)) > 1:
        raise ConfigError(f"{ref.describe()} speaks through a separate vocoder, which bundles cannot carry yet: "
                          "choose a voice without one (XTTS-v2, VITS) or Piper")
    try:
        model_file, config_file = ModelManager._find_files(folder)  # Coqui's own rule for which files are the model
    except ValueError:
        problem = f"{ref.describe()} is incomplete: no model file or config.json in {folder}."
        raise ModelNotAvailableError([problem]) from None
    if str(folder) in config_file.read_text(encoding="utf-8"):
        raise ConfigError(f"{ref.describe()}: its config.json names files by absolute path in {folder}, which a "
                          "moved bundle cannot follow: choose a voice from the Hugging Face hub (XTTS-v2) or Piper")
    return {"tts.voice": None, "tts.model_config": config_file, "tts.model_checkpoint": model_file}


def _relative(target: Path | None, folder: Path) -> str | None:
    """A path as ./x or ../x from `folder`: the form config loading reads relative to the file that writes it."""
    if target is None:
        return None
    relative = Path(os.path.relpath(target, folder)).as_posix()
    return relative if relative.startswith("../") else f"./{relative}"


def _set(data: dict[str, Any], dotted: str, value: str | None) -> None:
    *sections, key = dotted.split(".")
    for section in sections:
        data = data[section]
    data[key] = value


def _write_config(cfg: MmdialogConfig, values: dict[str, Path | None], root: Path, source: str) -> None:
    data = config_to_dict(cfg)
    # A kiosk serves, it does not train: training data and output paths name folders of the machine that built it.
    data["train"] = config_to_dict(MmdialogConfig())["train"]
    for key, target in values.items():
        _set(data, key, _relative(target, root))
    header = (f"# Written by `mmdialog bundle` from '{source}'. Model paths are relative to this file;\n"
              f"# serve with: mmdialog serve --config {CONFIG_FILE} (from this folder) or --config DIR/{CONFIG_FILE}\n")
    (root / CONFIG_FILE).write_text(header + OmegaConf.to_yaml(OmegaConf.create(data)), encoding="utf-8")


def _rewrite_checkpoint(folder: Path, values: dict[str, Path | None]) -> None:
    """Point the copied model folder's config.json at the copies of its components, relative to the folder."""
    path = folder / "config.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    for key, target in values.items():
        _set(manifest["config"], key, _relative(target, folder))
    path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def _empty_destination(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"bundle folder '{out}' already exists and is not empty: give a new folder with --out")


def bundle(cfg: MmdialogConfig, out: Path, accept_non_commercial: bool = False, source: str = "demo",
           report: Callable[[str], None] = print) -> None:
    """Write the bundle of `cfg` (loaded from `source`, named in messages) into the new folder `out`.

    Refuses non-commercial models unless `accept_non_commercial` (LicenceError), and models that are not on
    this machine (ModelNotAvailableError: run `mmdialog download` first), one sentence per model.
    """
    out = out.expanduser().resolve()
    _empty_destination(out)
    refs = required_models(cfg)
    _refuse_non_commercial([(ref, known_terms(ref)) for ref in refs], accept_non_commercial)
    found = [(ref, path, terms(ref, path)) for ref, path in _located(refs, source)]
    _refuse_non_commercial([(ref, t) for ref, _, t in found], accept_non_commercial)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Built beside `out` and renamed when complete: an interrupted bundle never looks like a finished one.
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _fill(staging, cfg, found, source, report)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report(f"wrote {out}: serve it with `mmdialog serve --config {out / CONFIG_FILE}`")


def _fill(root: Path, cfg: MmdialogConfig, found: list[tuple[ModelRef, Path, Terms]], source: str,
          report: Callable[[str], None]) -> None:
    values: dict[str, dict[str, Path | None]] = {CONFIG: {}, CHECKPOINT: {}}
    taken: set[str] = set()
    licences, checkpoint = [], None
    for ref, path, found_terms in found:
        copied = _copy(ref, path, root / MODELS / _folder_name(ref, taken))
        model_folder = copied if copied.is_dir() else copied.parent
        if ref.kind == Kind.checkpoint:
            checkpoint = copied
        if ref.kind == Kind.coqui:
            files = _coqui_files(ref, path).items()
            values[CONFIG].update({key: copied / file.relative_to(path) if file else None for key, file in files})
        else:
            for document, key in ref.keys:
                values[document][key] = copied
        relative = model_folder.relative_to(root).as_posix()
        licences.append((ref, relative, found_terms))
        size = folder_size(model_folder) / 1e6
        report(f"{ref.what} '{ref.label}': copied to {relative} ({size:,.0f} MB); licence {found_terms.summary}")
        if found_terms.non_commercial:
            report(f"  note: {ref.label} is for non-commercial use only (accepted with --accept-non-commercial)")
        elif not found_terms.statements:
            report(f"  note: no licence found for {ref.label}: check its terms before you give this bundle away")
    if checkpoint is not None:
        _rewrite_checkpoint(checkpoint, values[CHECKPOINT])
    _write_config(cfg, values[CONFIG], root, source)
    write_licences(root / LICENSES, licences)
    _check_self_contained(root)


def _check_self_contained(root: Path) -> None:
    """The written config must load and name nothing outside the bundle: a mistake shows now, not on the kiosk."""
    for ref in required_models(load_config(root / CONFIG_FILE)):
        if ref.kind not in (Kind.local, Kind.checkpoint) or not locate(ref).is_relative_to(root):
            raise ConfigError(f"bundle: {ref.describe()} is not a copy inside the bundle (a bug: please report it)")
