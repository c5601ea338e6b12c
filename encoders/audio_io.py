"""Turn any audio a person can give (a file path, raw bytes, an array) into 16 kHz mono float32.

soundfile reads wav / flac / ogg (vorbis, opus) / mp3 in-process; anything it cannot read (webm from browsers,
m4a from phones, ...) goes through the ffmpeg program, which decodes, mixes down and resamples in one step.

A truncated file (a recording cut off by a dropped upload) loads as far as it can be read: half a question is
still worth answering. A file with no readable samples at all raises InputError.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from mmdialog.errors import InputError

SAMPLE_RATE = 16_000
# Rates outside what audio hardware uses are junk from a broken header or array, not sound.
MIN_RATE, MAX_RATE = 1_000, 768_000

# A path, the file's bytes, a waveform at 16 kHz, or (sample_rate, waveform) as Gradio hands it over.
AudioInput = str | Path | bytes | np.ndarray | tuple[int, np.ndarray]


def to_mono_float(samples: np.ndarray) -> np.ndarray:
    """Mix channels down and scale integer PCM to [-1, 1]; accepts (n,), (n, ch) or (ch, n) shapes."""
    data = np.asarray(samples)
    if data.dtype.kind not in "iuf":  # strings, objects, complex numbers are not a waveform
        raise InputError(f"audio samples must be numbers, got an array of {data.dtype}")
    if data.size == 0:
        raise InputError("the audio is empty")
    if data.dtype.kind == "u":
        # Unsigned PCM (8-bit WAV) is centred on the middle of its range, not on zero.
        middle = (float(np.iinfo(data.dtype).max) + 1.0) / 2.0
        data = (data.astype(np.float32) - middle) / middle
    elif data.dtype.kind == "i":
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
    for rate in (from_rate, to_rate):
        if not MIN_RATE <= rate <= MAX_RATE:
            raise InputError(f"a sample rate of {rate} Hz is not plausible (audio uses {MIN_RATE} to {MAX_RATE} Hz)")
    if from_rate == to_rate:
        return samples
    if from_rate // math.gcd(from_rate, to_rate) > 1000:
        # torchaudio's filter bank grows with the reduced ratio of the rates: 44099 -> 16000 Hz takes ~25 s and
        # a prime rate near a MHz gigabytes. Interpolating onto the nearest multiple of 100 Hz first is inaudible.
        nice = round(from_rate, -2)
        positions = np.arange(int(len(samples) * nice / from_rate)) * (from_rate / nice)
        samples = np.interp(positions, np.arange(len(samples)), samples).astype(np.float32)
        from_rate = nice
    tensor = torch.from_numpy(np.ascontiguousarray(samples))
    return AF.resample(tensor, from_rate, to_rate).numpy()


def _decode_with_ffmpeg(path: Path, what: str, sample_rate: int) -> np.ndarray:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise InputError(f"{what} is in a format that needs the ffmpeg program; install it (apt-get install ffmpeg)")
    # A real file, not stdin: mp4/m4a files usually keep their index at the end, which ffmpeg can only
    # reach by seeking. "file:" stops a name with a colon being taken for a protocol; the whitelist keeps a
    # crafted playlist (HLS, concat) from making ffmpeg open network URLs.
    command = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-protocol_whitelist", "file",
               "-i", f"file:{path.resolve()}", "-vn", "-f", "f32le", "-ac", "1", "-ar", str(sample_rate), "pipe:1"]
    try:
        result = subprocess.run(command, capture_output=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        raise InputError(f"{what} took too long to decode") from None
    if result.returncode != 0 or not result.stdout:
        raise InputError(f"{what} is not an audio file that can be read")
    return np.frombuffer(result.stdout, dtype=np.float32).copy()


def _decode_file(path: Path, what: str, sample_rate: int) -> np.ndarray:
    try:
        samples, rate = sf.read(path, dtype="float32", always_2d=False)
    except Exception:  # any format or decoding problem: let ffmpeg have a go
        return _decode_with_ffmpeg(path, what, sample_rate)
    if samples.size == 0:  # e.g. a WAV header with no data after it
        raise InputError(f"{what} contains no audio samples")
    return resample(to_mono_float(samples), int(rate), sample_rate)


def load_audio(source: AudioInput, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode `source` to mono float32 at `sample_rate`; unreadable input raises InputError, never crashes."""
    if isinstance(source, tuple):
        if len(source) != 2:
            raise InputError("audio given as a tuple must be (sample_rate, samples)")
        rate, samples = source
        try:
            rate = int(rate)
        except (TypeError, ValueError, OverflowError):  # None, "44.1k", NaN, infinity
            raise InputError(f"the sample rate must be a number, got {type(rate).__name__}") from None
        return resample(to_mono_float(samples), rate, sample_rate)
    if isinstance(source, np.ndarray):
        return resample(to_mono_float(source), SAMPLE_RATE, sample_rate)
    if isinstance(source, (str, Path)):
        path = Path(source)
        what = f"audio file '{path.name}'"  # the name only: the server's folders are nobody's business
        if not path.is_file():
            raise InputError(f"{what} does not exist")
        if path.stat().st_size == 0:
            raise InputError(f"{what} is empty")
        return _decode_file(path, what, sample_rate)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not source:
            raise InputError("the uploaded audio is empty")
        with tempfile.TemporaryDirectory() as folder:  # ffmpeg needs a real, seekable file
            path = Path(folder) / "upload"
            path.write_bytes(source)
            return _decode_file(path, "the uploaded audio", sample_rate)
    raise InputError(f"audio of type {type(source).__name__} is not supported")
