"""Raw media (paths, bytes, arrays) to model-ready `Media`: one place for training and serving alike."""

from __future__ import annotations

import numpy as np

from encoders.audio_io import AudioInput, load_audio
from encoders.image_io import ImageInput, load_image
from mmdialog.dialogue import Media
from mmdialog.settings import SpeechMode


class MediaPreparer:
    """Preprocesses images and audio the way the given model expects them."""

    def __init__(self, model):
        self.model = model

    def image(self, source: ImageInput) -> Media:
        return Media("image", pixel_values=self.model.vision.preprocess([load_image(source)])[0])

    def audio(self, source: AudioInput | np.ndarray, transcript: str | None = None) -> Media:
        """Audio as a mel spectrogram; the transcript is computed when the speech mode needs one and
        none was given (a cached transcript in training data saves this Whisper pass)."""
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
