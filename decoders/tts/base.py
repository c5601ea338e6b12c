"""What every voice backend provides, and the one path all callers take from reply text to audio chunks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from decoders.tts.text import normalize_text, split_sentences
from encoders.audio_io import resample
from mmdialog.errors import ConfigError

# Below this RMS a chunk is silence: raising it to speech level would only amplify noise (and divide by ~0).
SILENCE_DBFS = -60.0
# The highest a sample may reach after gain; the margin absorbs the overshoot of a later lossy encoder.
PEAK_DBFS = -1.0


class Synthesizer(Protocol):
    """A voice backend: one sentence of already normalized text in, float32 mono audio out."""

    sample_rate: int  # the backend's native rate

    def synthesize_sentence(self, text: str) -> np.ndarray: ...


def _db_to_gain(dbfs: float) -> float:
    return float(10.0 ** (dbfs / 20.0))


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0


def is_silent(audio: np.ndarray) -> bool:
    """Nothing a listener would hear: an RMS below `SILENCE_DBFS`."""
    return _rms(audio) < _db_to_gain(SILENCE_DBFS)


def _limit(audio: np.ndarray, ceiling: float, window: int) -> np.ndarray:
    """Pull the peaks above `ceiling` down with a gain that moves smoothly over `window` samples.

    The gain each sample needs is held at its minimum over the window around it and then averaged over the
    same window, so every average only mixes gains at or below what the sample needs: no sample passes the
    ceiling, and the gain ramps instead of jumping (a jump clicks, clipping crackles).
    """
    need = np.minimum(1.0, ceiling / np.maximum(np.abs(audio), 1e-12))
    window = min(window | 1, (audio.size - 1) | 1)  # odd, so the window is centred on its sample
    half = window // 2
    held = sliding_window_view(np.pad(need, half, mode="edge"), window).min(axis=1)
    kernel = np.hanning(window + 2)[1:-1]
    gain = np.convolve(np.pad(held, half, mode="edge"), kernel / kernel.sum(), mode="valid")
    return (audio * gain).astype(np.float32)


def normalize_loudness(
    audio: np.ndarray, target_dbfs: float, sample_rate: int, peak_dbfs: float = PEAK_DBFS
) -> np.ndarray:
    """`audio` at an RMS of `target_dbfs`, with its few peaks above `peak_dbfs` limited (5 ms gain ramps).

    Speech peaks 15-20 dB above its RMS, so at -20 dBFS some peaks would clip; a single gain small enough for
    the highest peak would leave such sentences quieter than the others. Silence is returned unchanged.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if is_silent(audio):
        return audio
    louder = audio * np.float32(_db_to_gain(target_dbfs) / _rms(audio))
    ceiling = _db_to_gain(peak_dbfs)
    if float(np.max(np.abs(louder))) <= ceiling:
        return louder
    return _limit(louder, ceiling, int(0.005 * sample_rate))


class Speech:
    """Text to audio chunks, one per sentence, at one output rate and loudness whatever the backend.

    `backend=None` is the `none` TTS backend: every text gives no audio.
    """

    def __init__(
        self,
        backend: Synthesizer | None,
        sample_rate: int,
        loudness_dbfs: float = -20.0,
        normalize: Callable[[str], str] = normalize_text,
        pause_s: float = 0.2,
    ):
        if sample_rate <= 0:
            raise ConfigError(f"tts.sample_rate must be a positive number of Hz, got {sample_rate}")
        if loudness_dbfs >= 0:
            raise ConfigError(f"tts.loudness_dbfs must be below 0 dBFS (full scale), got {loudness_dbfs}")
        self.backend = backend
        self.sample_rate = sample_rate
        self.loudness_dbfs = loudness_dbfs
        self.normalize = normalize
        # The pause a listener expects between sentences; it leads every chunk after the first, so a player
        # that plays chunks back to back sounds natural and the first sound is not delayed.
        self._pause = np.zeros(int(pause_s * sample_rate), dtype=np.float32)

    def speak(self, text: str) -> Iterator[np.ndarray]:
        """Yield float32 mono audio at `sample_rate`, one chunk per sentence, as soon as each is ready."""
        if self.backend is None:
            return
        first = True
        for sentence in split_sentences(self.normalize(text)):
            audio = np.asarray(self.backend.synthesize_sentence(sentence), dtype=np.float32).reshape(-1)
            if is_silent(audio):
                continue
            # Resample before the gain, so the peak limit holds on the samples that are actually played.
            audio = resample(audio, self.backend.sample_rate, self.sample_rate)
            audio = normalize_loudness(audio, self.loudness_dbfs, self.sample_rate)
            yield audio if first else np.concatenate([self._pause, audio])
            first = False

    def speak_all(self, text: str) -> np.ndarray:
        """The whole text as one float32 array at `sample_rate` (empty when there is nothing to say)."""
        return np.concatenate([np.zeros(0, dtype=np.float32), *self.speak(text)])
