"""Raw media (paths, bytes, arrays) to model-ready `Media`: one place for training and serving alike."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from encoders.audio_io import AudioInput, load_audio
from encoders.image_io import ImageInput, load_image
from mmdialog.dialogue import Media
from mmdialog.settings import Freeze, SpeechMode


class MediaPreparer:
    """Preprocesses images and audio the way the given model expects them."""

    def __init__(self, model):
        self.model = model

    def image(self, source: ImageInput) -> Media:
        return Media("image", pixel_values=self.model.vision.preprocess([load_image(source)])[0])

    def cached_states(self, source: AudioInput) -> torch.Tensor | None:
        """Encoder states stored beside an audio file (`clip.states.safetensors`, written by `mmdialog synth`),
        used only when they were made by this very speech model with this window and it is frozen."""
        if not isinstance(source, (str, Path)) or self.model.config.speech.freeze != Freeze.frozen:
            return None
        path = Path(source).with_suffix(".states.safetensors")
        if not path.is_file():
            return None
        with safe_open(str(path), framework="pt") as handle:
            made_by = json.loads((handle.metadata() or {}).get("made_by", "{}"))
            speech = self.model.config.speech
            if made_by != {"speech_model": speech.name, "min_window_seconds": speech.min_window_seconds}:
                return None
            return handle.get_tensor("states").float()

    def audio(self, source: AudioInput | np.ndarray, transcript: str | None = None) -> Media:
        """Audio as a mel spectrogram; the transcript is computed when the speech mode needs one and
        none was given (a cached transcript in training data saves this Whisper pass)."""
        states = self.cached_states(source) if transcript is not None else None
        if states is not None:
            return Media("audio", features=states, transcript=transcript)
        samples = load_audio(source)
        speech = self.model.speech
        mel = speech.log_mel(samples)
        media = Media("audio", mel=mel, transcript=transcript)
        if transcript is None and self.model.config.speech.mode != SpeechMode.features:
            states, media.transcript = speech.encode(samples)
            if self.model.config.speech.freeze.value == "frozen":
                # The same pass gave the fusion states; keep them (a plain clone: inference-mode tensors
                # cannot take part in the projector's backward pass).
                media.features = states.cpu().clone()
        return media
