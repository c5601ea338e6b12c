"""The local copies of the models a config needs: where they are on this machine, and fetching missing ones.

Every kind of model is fetched by its own library into that library's usual cache (huggingface_hub,
openai-whisper, Coqui's model manager), so the loaders find it there later without being told.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from encoders.hub import first_line, hub_reachable, load_or_explain, reachable
from mmdialog.errors import ModelNotAvailableError
from mmdialog.model_refs import Kind, ModelRef
from mmdialog.settings import MmdialogConfig

# Weights for other frameworks and runtimes: transformers loads none of them, and they can double a download.
_OTHER_FRAMEWORKS = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "*.onnx_data", "*.tflite", "*.gguf", "*.mlmodel",
                     "onnx/*", "openvino/*", "coreml/*", "tf_model*", "flax_model*", "rust_model*"]


def _not_here(ref: ModelRef, config: str) -> ModelNotAvailableError:
    return ModelNotAvailableError([
        f"{ref.describe()}: not on this machine; run `mmdialog download --config {config}` first, "
        "with internet access."
    ])


def _existing(ref: ModelRef) -> Path:
    path = Path(ref.name).expanduser()
    if not path.exists():
        raise ModelNotAvailableError([f"{ref.describe()} is not available: '{path}' does not exist."])
    return path.resolve()


def _bundled(ref: ModelRef) -> Path:
    """The folder (Whisper, the text encoder) or .onnx file (Piper) a `bundled:` name stands for, as the loaders
    resolve it."""
    if ref.role == "speech":
        from encoders.speech import bundled_whisper_folder

        return bundled_whisper_folder(ref.name)
    if ref.role == "text":
        from encoders.text import bundled_text_folder

        return bundled_text_folder(ref.name)
    from decoders.tts.factory import piper_voice_files

    onnx, _ = piper_voice_files(ref.name)
    if not onnx.is_file():
        raise ModelNotAvailableError([f"{ref.describe()} is not available: '{onnx}' does not exist."])
    return onnx


def _whisper_file(ref: ModelRef) -> Path | None:
    from encoders.speech import check_whisper_name, whisper_cache_file

    check_whisper_name(ref.name)
    path = whisper_cache_file(ref.name)
    return path if path.is_file() else None


def _hub_snapshot(name: str, local_files_only: bool = False) -> Path:
    """The snapshot folder in huggingface_hub's cache, downloading what it lacks unless `local_files_only`."""
    from huggingface_hub import snapshot_download

    if local_files_only:
        return Path(snapshot_download(name, local_files_only=True))
    return Path(snapshot_download(name, ignore_patterns=_skipped_files(name)))


def _skipped_files(name: str) -> list[str]:
    """Pickled PyTorch weights too when the repository also has safetensors: those are what gets loaded."""
    from huggingface_hub import list_repo_files

    files = list_repo_files(name)
    pickled = ["*.bin", "*.pt", "*.pth"] if any(f.endswith(".safetensors") for f in files) else []
    return _OTHER_FRAMEWORKS + pickled


def locate(ref: ModelRef, config: str = "C") -> Path:
    """The model's folder or main file on this machine, without any network; `config` names the config in the
    advice to download first. A model that is not here is one sentence (ModelNotAvailableError)."""
    if ref.kind in (Kind.local, Kind.checkpoint):
        return _existing(ref)
    if ref.kind == Kind.bundled:
        return _bundled(ref)
    if ref.kind == Kind.whisper:
        path = _whisper_file(ref)
        if path is None:
            raise _not_here(ref, config)
        return path
    if ref.kind == Kind.hub:
        try:
            return _hub_snapshot(ref.name, local_files_only=True)
        except Exception:  # huggingface_hub's "not in the cache" errors come in several classes
            raise _not_here(ref, config) from None
    from decoders.tts.coqui import local_model_folder

    folder = local_model_folder(ref.name)
    if folder is None:
        raise _not_here(ref, config)
    return folder


def _changed(path: Path, before: float | None) -> bool:
    return path.is_file() and path.stat().st_mtime != before


def _fetch_whisper(ref: ModelRef) -> tuple[Path, bool]:
    """Online, openai-whisper's own download (as `whisper.load_model` does it: same folder, SHA-256 checked, a
    damaged file fetched again); offline, the cached file as it is."""
    import whisper

    from encoders.speech import whisper_cache_file, whisper_not_cached

    path = _whisper_file(ref)
    url = whisper._MODELS[ref.name]
    if not reachable(url):
        if path is None:
            raise whisper_not_cached(ref.name)
        return path, False
    target = whisper_cache_file(ref.name)
    before = target.stat().st_mtime if target.is_file() else None
    try:
        whisper._download(url, str(target.parent), in_memory=False)
    except Exception as exc:  # urllib and checksum errors alike: the model is not here
        raise ModelNotAvailableError([f"{ref.describe()} could not be downloaded: {first_line(exc)}"]) from None
    return target, _changed(target, before)


def _fetch_hub(ref: ModelRef) -> tuple[Path, bool]:
    """Online, huggingface_hub fills in whatever the cached snapshot lacks (a loader may have cached only some
    files); offline, the cached snapshot, or the loaders' own sentence for a model that is not here."""
    if not hub_reachable():
        return load_or_explain(ref.what, ref.name, _hub_snapshot), False
    try:
        before = _files(_hub_snapshot(ref.name, local_files_only=True))
    except Exception:  # not cached yet
        before = set()
    try:
        path = _hub_snapshot(ref.name)
    except Exception as exc:  # hub, network and file errors come in many classes; all mean the same here
        raise ModelNotAvailableError([f"{ref.describe()} could not be downloaded: {first_line(exc)}"]) from None
    return path, _files(path) != before


def _files(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*")}


def _fetch_coqui(ref: ModelRef) -> tuple[Path, bool]:
    from decoders.tts.coqui import fetch_model  # Coqui's import takes seconds: paid only when a voice needs it

    return fetch_model(ref.name)


_FETCHERS: dict[Kind, Callable[[ModelRef], tuple[Path, bool]]] = {
    Kind.local: lambda ref: (_existing(ref), False),
    Kind.checkpoint: lambda ref: (_existing(ref), False),
    Kind.bundled: lambda ref: (_bundled(ref), False),
    Kind.whisper: _fetch_whisper,
    Kind.hub: _fetch_hub,
    Kind.coqui: _fetch_coqui,
}


def fetch(ref: ModelRef) -> str:
    """Make the model local; returns what happened, for a person to read."""
    path, downloaded = _FETCHERS[ref.kind](ref)
    if downloaded:
        return f"{ref.describe()}: fetched into {path}"
    where = "bundled in an installed package" if ref.kind == Kind.bundled else "already here"
    return f"{ref.describe()}: {where} ({path})"


def fetch_all(cfg: MmdialogConfig, report: Callable[[str], None]) -> None:
    """Fetch every model `cfg` needs, reporting each as it is done; then one sentence per model that is
    still missing (ModelNotAvailableError), so a half-offline machine gets everything it can."""
    from mmdialog.model_refs import required_models

    problems = []
    for ref in required_models(cfg):
        try:
            report(fetch(ref))
        except ModelNotAvailableError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ModelNotAvailableError(problems)


def folder_size(path: Path) -> int:
    """Bytes in a file or a folder (links followed, as a copy would)."""
    if path.is_file():
        return path.stat().st_size
    return sum(os.path.getsize(p) for p in path.rglob("*") if p.is_file())
