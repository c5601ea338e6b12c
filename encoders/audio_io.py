"""Turn any audio a person can give (a file path, raw bytes, an array) into 16 kHz mono float32.

soundfile reads wav / flac / ogg / mp3 in-process; anything it cannot read (webm from browsers, m4a, ...)
goes through the ffmpeg program, which decodes and resamples in one step.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from mmdialog.errors import InputError

SAMPLE_RATE = 16_000

# A path, the file's bytes, a waveform at 16 kHz, or (sample_rate, waveform) as Gradio hands it over.
AudioInput = str | Path | bytes | np.ndarray | tuple[int, np.ndarray]


def to_mono_float(samples: np.ndarray) -> np.ndarray:
    """Mix channels down and scale integer PCM to [-1, 1]; accepts (n,), (n, ch) or (ch, n) shapes."""
    data = np.asarray(samples)
    if data.size == 0:
        raise InputError("the audio is empty")
    if np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max)
    data = data.astype(np.float32, copy=False)
    if data.ndim == 2:
        # Channels are the short axis: (n, ch) from soundfile/Gradio, (ch, n) from torch-style code.
        data = data.mean(axis=1 if data.shape[1] <= data.shape[0] else 0)
    elif data.ndim != 1:
        raise InputError(f"audio must be 1-D or 2-D samples, got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise InputError("the audio contains NaN or infinite samples")
    return data


def resample(samples: np.ndarray, from_rate: int, to_rate: int = SAMPLE_RATE) -> np.ndarray:
    if from_rate == to_rate:
        return samples
    if from_rate <= 0:
        raise InputError(f"bad sample rate {from_rate}")
    tensor = torch.from_numpy(np.ascontiguousarray(samples))
    return AF.resample(tensor, from_rate, to_rate).numpy()


def _decode_with_ffmpeg(data: bytes, what: str) -> np.ndarray:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise InputError(f"{what} is in a format that needs the ffmpeg program; install it (apt-get install ffmpeg)")
    command = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", "pipe:0",
               "-f", "f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "pipe:1"]
    try:
        result = subprocess.run(command, input=data, capture_output=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        raise InputError(f"{what} took too long to decode") from None
    if result.returncode != 0 or not result.stdout:
        raise InputError(f"{what} is not an audio file that can be read")
    return np.frombuffer(result.stdout, dtype=np.float32).copy()


def load_audio(source: AudioInput, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode `source` to mono float32 at `sample_rate`; unreadable input raises InputError, never crashes."""
    if isinstance(source, tuple):
        rate, samples = source
        return resample(to_mono_float(samples), int(rate), sample_rate)
    if isinstance(source, np.ndarray):
        return resample(to_mono_float(source), SAMPLE_RATE, sample_rate)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"audio file '{path.name}' does not exist")
        what = f"audio file '{path.name}'"
        data = path.read_bytes()
    elif isinstance(source, (bytes, bytearray)):
        what, data = "the uploaded audio", bytes(source)
    else:
        raise InputError(f"audio of type {type(source).__name__} is not supported")
    if not data:
        raise InputError(f"{what} is empty")
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    except Exception:
        samples = _decode_with_ffmpeg(data, what)
        rate = SAMPLE_RATE
    return resample(to_mono_float(samples), int(rate), sample_rate)
