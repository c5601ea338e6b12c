"""The model a config describes: built from its components, or a trained checkpoint with this config's
run-time settings (generation, dialogue budget, speech mode, voice, device) on top."""

from __future__ import annotations

from collections.abc import Sequence

from mmdialog.errors import ConfigError
from mmdialog.model import MultimodalDialogueModel
from mmdialog.settings import MmdialogConfig

# Sections a checkpoint does not fix: they are read at run time, never baked into weights.
RUNTIME_SECTIONS = ("name", "dialogue", "generation", "tts", "limits", "turn_taking", "app", "train", "runtime")
# Speech settings that only change how the encoder is used, not what it is.
RUNTIME_SPEECH_KEYS = ("mode", "min_window_seconds", "language", "max_transcript_tokens", "beam_size")


def load_model(cfg: MmdialogConfig, overrides: Sequence[str] = ()) -> MultimodalDialogueModel:
    """`overrides` (the command line's key=value items, already in `cfg`) are checked: with a checkpoint,
    the architecture cannot be overridden, only how it runs."""
    if not cfg.checkpoint:
        return MultimodalDialogueModel.from_config(cfg)
    model = MultimodalDialogueModel.from_pretrained(cfg.checkpoint)
    for section in RUNTIME_SECTIONS:
        setattr(model.config, section, getattr(cfg, section))
    model.config.checkpoint = cfg.checkpoint
    for key in RUNTIME_SPEECH_KEYS:
        # Set on the shared settings object: the speech encoder reads the same one.
        setattr(model.config.speech, key, getattr(cfg.speech, key))
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        section, _, field = key.partition(".")
        fixed = section in ("speech", "vision", "decoder", "fusion") and not (
            section == "speech" and field in RUNTIME_SPEECH_KEYS)
        if fixed:
            raise ConfigError(f"'{key}' is fixed by the checkpoint {cfg.checkpoint}; it changes only by training")
    return model
