"""From the `tts` settings to a ready `Speech`: the one place that knows which backends exist."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from decoders.tts.base import Speech, Synthesizer
from decoders.tts.piper import PiperVoice, bundled_voice_paths
from decoders.tts.text import normalize_text, strip_markup
from mmdialog.errors import ConfigError, ModelNotAvailableError
from mmdialog.settings import TTSBackend, TTSSettings

_BUNDLED_PIPER = {"bundled:joe": bundled_voice_paths}


class PiperBackend:
    """A Piper voice as a `Synthesizer`, with the configured speed and speaker."""

    def __init__(self, voice: PiperVoice, speed: float = 1.0, speaker_id: int | None = None):
        self.voice = voice
        self.sample_rate = voice.sample_rate
        self._length_scale = voice.length_scale / speed  # Piper stretches phoneme durations by this
        self._speaker_id = speaker_id

    def synthesize_sentence(self, text: str) -> np.ndarray:
        return self.voice.synthesize(text, length_scale=self._length_scale, speaker_id=self._speaker_id)


def _piper_speaker(config_path: Path, speaker: str | None) -> int | None:
    """A speaker by name (the voice's `speaker_id_map`) or by number; None for the voice's only speaker."""
    if speaker is None:
        return None
    names: dict[str, int] = json.loads(config_path.read_text(encoding="utf-8")).get("speaker_id_map") or {}
    if speaker in names:
        return int(names[speaker])
    if names and speaker.isdigit() and int(speaker) < len(names):
        return int(speaker)
    choices = ", ".join(list(names)[:8]) or "none (it has a single speaker: remove tts.speaker)"
    raise ConfigError(f"tts.speaker '{speaker}' is not a speaker of Piper voice '{config_path.stem}': {choices}")


def piper_voice_files(voice: str) -> tuple[Path, Path]:
    """The .onnx model and .json config a `tts.voice` of the piper backend names (not checked to exist)."""
    if voice.startswith("bundled:"):
        if voice not in _BUNDLED_PIPER:
            raise ModelNotAvailableError([
                f"Piper voice '{voice}' is not bundled; bundled voices: {', '.join(_BUNDLED_PIPER)}."
            ])
        return _BUNDLED_PIPER[voice]()
    if voice.endswith(".onnx"):
        return Path(voice).expanduser(), Path(f"{Path(voice).expanduser()}.json")
    raise ConfigError(f"tts.voice '{voice}' is not a Piper voice: give a .onnx file or 'bundled:joe'")


def _build_piper(settings: TTSSettings) -> PiperBackend:
    onnx, config = piper_voice_files(settings.voice or "")
    loaded = PiperVoice.load(onnx, config)
    return PiperBackend(loaded, settings.speed, _piper_speaker(config, settings.speaker))


def _build_coqui(settings: TTSSettings, device: str) -> Synthesizer:
    from decoders.tts.coqui import CoquiVoice  # Coqui's import takes a second; Piper users need not pay it

    options = {"speaker": settings.speaker, "language": settings.language, "speed": settings.speed, "device": device}
    if settings.model_config or settings.model_checkpoint:
        if not (settings.model_config and settings.model_checkpoint):
            raise ConfigError("a local Coqui model needs both tts.model_config and tts.model_checkpoint")
        return CoquiVoice.from_files(settings.model_config, settings.model_checkpoint, **options)
    if not settings.voice:
        raise ConfigError("tts.backend=coqui needs tts.voice (a model name) or tts.model_config + model_checkpoint")
    return CoquiVoice.from_name(settings.voice, **options)


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def build_synthesizer(settings: TTSSettings, device: str = "auto") -> Speech:
    """The `Speech` the settings describe; `device` (auto | cpu | cuda[:N]) places Coqui models (Piper runs on
    the CPU with onnxruntime). A voice that cannot be loaded raises one clear error here, not at the first reply."""
    if settings.speed <= 0:
        raise ConfigError(f"tts.speed must be above 0 (1.0 is normal), got {settings.speed}")
    if settings.backend == TTSBackend.none:
        backend: Synthesizer | None = None
    elif settings.backend == TTSBackend.piper:
        backend = _build_piper(settings)
    else:
        backend = _build_coqui(settings, _resolve_device(device))
    # Numbers, abbreviations and symbols are written out in English; other languages only lose their markup.
    english = (settings.language or "en").lower().replace("_", "-").split("-")[0] == "en"
    return Speech(backend, settings.sample_rate, settings.loudness_dbfs, normalize_text if english else strip_markup)
