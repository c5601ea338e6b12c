"""Coqui TTS voices: a released model by name (XTTS-v2, VITS, ...) or a local config.json + checkpoint.

Coqui's model manager downloads a missing model without a timeout, asks for the XTTS licence on stdin and
logs a traceback when the network is gone. So a name is checked here first: known, licence accepted, files
present; only then does Coqui load it, and a model that would need a download fails in one sentence when
the hub is out of reach. Checkpoints are read by Coqui's own loader, which uses `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from encoders.hub import load_or_explain
from mmdialog.errors import ConfigError, ModelNotAvailableError

if TYPE_CHECKING:
    from TTS.api import TTS
    from TTS.utils.manage import ModelManager

log = logging.getLogger(__name__)

_NAME_HELP = "names look like 'tts_models/en/ljspeech/vits' (`tts --list_models` lists them)"
_SHOWN_CHOICES = 8  # an error lists this many valid speakers: XTTS-v2 has 58


def _model_item(manager: ModelManager, name: str) -> dict[str, Any]:
    """Coqui's catalogue entry for `name`; an unknown name is a clear error, not Coqui's KeyError."""
    parts = name.split("/")
    if len(parts) == 4 and parts[0] == "tts_models" and parts[2] == "fairseq":
        return {}  # Meta's MMS voices: any language code, not listed in the catalogue
    try:
        model_type, language, dataset, model = parts
        if model_type != "tts_models":
            raise KeyError(model_type)
        return manager.models_dict[model_type][language][dataset][model]
    except (ValueError, KeyError):
        raise ModelNotAvailableError([f"'{name}' is not a Coqui text-to-speech model: {_NAME_HELP}."]) from None


def _in_coqui_folder(manager: ModelManager, name: str) -> bool:
    """Whether a GitHub-hosted model (or vocoder) is downloaded; Hugging Face ones are found by huggingface_hub."""
    item = _model_item(manager, name) if name.startswith("tts_models/") else {}
    if "repo_id" in item:
        return True  # huggingface_hub looks in its cache, offline, when load_or_explain tries local files
    folder = Path(manager.output_prefix) / name.replace("/", "--")
    # Coqui creates the folder before downloading into it: an interrupted download leaves it without a config.
    return folder.is_dir() and any(folder.rglob("config.json"))


def _catalogue(name: str) -> tuple[ModelManager, dict[str, Any]]:
    from TTS.utils.manage import ModelManager

    manager = ModelManager(progress_bar=False)
    return manager, _model_item(manager, name)


def _require_terms(manager: ModelManager, name: str, item: dict[str, Any]) -> None:
    """Coqui asks for the XTTS licence on stdin, which a server or a script cannot answer: ask for the variable."""
    if item.get("tos_required") and not manager.tos_agreed(item, manager.output_prefix / name.replace("/", "--")):
        raise ModelNotAvailableError([
            f"Coqui model '{name}' is under the non-commercial Coqui Public Model License "
            "(https://coqui.ai/cpml): set COQUI_TOS_AGREED=1 to accept it."
        ])


def catalogue_licence(name: str) -> str | None:
    """The licence Coqui's catalogue gives a released model (no files needed)."""
    return _catalogue(name)[1].get("license")


def local_model_folder(name: str) -> Path | None:
    """The folder holding a released model's files on this machine; None while it is not downloaded."""
    manager, item = _catalogue(name)
    if "repo_id" in item:
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(item["repo_id"], local_files_only=True))  # never asks the network
        except Exception:  # huggingface_hub's "not in the cache" error; anything else means unusable too
            return None
    folder = Path(manager.output_prefix) / name.replace("/", "--")
    return folder if _in_coqui_folder(manager, name) else None


def needed_models(name: str, item: dict[str, Any] | None = None) -> list[str]:
    """A released model and the separate vocoder it speaks through, if it has one."""
    item = _catalogue(name)[1] if item is None else item
    return [name, *([item["default_vocoder"]] if item.get("default_vocoder") else [])]


def fetch_model(name: str) -> tuple[Path, bool]:
    """A released model's folder, downloaded (with its vocoder) only when not here: (folder, downloaded)."""
    manager, item = _catalogue(name)
    _require_terms(manager, name, item)
    needed = needed_models(name, item)

    def fetch(model_name: str, local_files_only: bool = False) -> tuple[Path, bool]:
        if not local_files_only:
            for each in needed:
                manager.download_model(each)
        folder = local_model_folder(model_name)
        if folder is None or not all(_in_coqui_folder(manager, n) for n in needed):
            raise FileNotFoundError(model_name)
        return folder, not local_files_only

    return load_or_explain("Coqui voice", name, fetch)


def _choose(kind: str, value: str | None, valid: list[str] | None, model: str) -> str | None:
    """The configured speaker or language checked against the model's own list (None: it has just one)."""
    if valid is None:
        # tts.language also picks the text normalization, so it may be set for a one-language model.
        if value is not None and kind == "speaker":
            raise ConfigError(f"Coqui model '{model}' has a single speaker: remove tts.speaker ('{value}')")
        return None
    if not valid:
        raise ConfigError(f"Coqui model '{model}' lists no {kind}s to choose from")
    if value is None:
        log.info("Coqui model %s: no tts.%s set, using '%s'", model, kind, valid[0])
        return valid[0]
    if value not in valid:
        shown = ", ".join(valid[:_SHOWN_CHOICES]) + (", ..." if len(valid) > _SHOWN_CHOICES else "")
        raise ConfigError(
            f"tts.{kind} '{value}' is not one of the {len(valid)} {kind}s of Coqui model '{model}': {shown}"
        )
    return value


def _speed_arguments(tts: TTS, speed: float, model: str) -> dict[str, float]:
    """How this model speaks faster: VITS-like models stretch durations, XTTS takes a `speed` argument."""
    if speed == 1.0:
        return {}
    network = tts.synthesizer.tts_model
    if type(network).__name__ == "Xtts":
        return {"speed": speed}
    if hasattr(network, "length_scale"):  # VITS, Glow-TTS: durations are multiplied by it
        network.length_scale = float(network.length_scale) / speed
        return {}
    log.warning("Coqui model %s has no speed control; tts.speed=%s is ignored", model, speed)
    return {}


class CoquiVoice:
    """One loaded Coqui model with its speaker, language and speed fixed; safe to share between threads."""

    def __init__(
        self, tts: TTS, model: str, speaker: str | None = None, language: str | None = None, speed: float = 1.0
    ):
        self._tts = tts
        self.sample_rate = int(tts.synthesizer.output_sample_rate)
        self._speaker = _choose("speaker", speaker, tts.speakers, model)
        self._language = _choose("language", language, tts.languages, model)
        self._extra = _speed_arguments(tts, speed, model)
        # One sentence at a time: Coqui models keep per-call state (XTTS's caches), and two calls at once on
        # one CPU or GPU are not faster than one after the other.
        self._lock = threading.Lock()

    @classmethod
    def from_name(
        cls, name: str, *, speaker: str | None = None, language: str | None = None, speed: float = 1.0,
        device: str = "cpu",
    ) -> CoquiVoice:
        """A released model by Coqui name, from Coqui's model folder, downloading it only if the hub answers."""
        from TTS.api import TTS

        manager, item = _catalogue(name)
        _require_terms(manager, name, item)
        needed = needed_models(name, item)

        def load(model_name: str, local_files_only: bool = False) -> TTS:
            if local_files_only and not all(_in_coqui_folder(manager, n) for n in needed):
                raise FileNotFoundError(model_name)  # Coqui itself would start a download here
            return TTS(model_name, progress_bar=False)

        tts = load_or_explain("Coqui voice", name, load)
        return cls(tts.to(device), name, speaker, language, speed)

    @classmethod
    def from_files(
        cls, config_path: str | Path, checkpoint_path: str | Path, *, speaker: str | None = None,
        language: str | None = None, speed: float = 1.0, device: str = "cpu",
    ) -> CoquiVoice:
        """A local model: its config.json and checkpoint (a .pth holding {"model": state_dict})."""
        for what, path in (("config", config_path), ("checkpoint", checkpoint_path)):
            if not Path(path).is_file():
                raise ModelNotAvailableError([f"Coqui model {what} '{path}' does not exist."])
        from TTS.api import TTS

        try:
            tts = TTS(model_path=str(checkpoint_path), config_path=str(config_path), progress_bar=False)
        except Exception as exc:  # Coqui raises many kinds (config keys, state dict shapes, pickles)
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ModelNotAvailableError([
                f"Coqui model '{checkpoint_path}' could not be loaded with config '{config_path}': {reason}"
            ]) from None
        return cls(tts.to(device), str(checkpoint_path), speaker, language, speed)

    def synthesize_sentence(self, text: str) -> np.ndarray:
        """One sentence as float32 mono audio at `sample_rate`."""
        with self._lock:
            wav = self._tts.tts(
                text, speaker=self._speaker, language=self._language, split_sentences=False, **self._extra
            )
        # Coqui pads every sentence with exact zeros; pauses between sentences are the caller's to choose.
        return np.trim_zeros(np.asarray(wav, dtype=np.float32), "b")
