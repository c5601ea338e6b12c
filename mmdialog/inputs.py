"""Limits and sanitizing of what a person sends, in one place: text, audio length, silence, upload size."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import numpy as np

from encoders.audio_io import SAMPLE_RATE
from mmdialog.errors import InputError
from mmdialog.settings import LimitSettings

# Control characters (keeping newline and tab) and the bidi embedding/override/isolate marks that can
# make a message display differently from what it says; plain RTL/LTR marks are harmless and kept.
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def clean_text(text: str | None, limits: LimitSettings) -> str:
    if not text:
        return ""
    if len(text) > limits.max_text_chars:
        raise InputError(f"the message is too long ({len(text):,} characters; the limit is "
                         f"{limits.max_text_chars:,})")
    text = unicodedata.normalize("NFC", _UNSAFE.sub(" ", text))
    return " ".join(text.split())


# A scheme such as http://, ftp://, file://, s3:// or a data: URI: a link to something, not a file we hold.
_LINK = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]+://|data:)")


def check_upload(source: object, limits: LimitSettings) -> None:
    """Refuse links (a turn's media are files the caller holds; fetching what a request names would let anyone
    make the server reach into its network) and files larger than the upload limit, before reading them."""
    if isinstance(source, str) and _LINK.match(source.strip()):
        raise InputError("links are not fetched: send the file itself")
    size = None
    if isinstance(source, (bytes, bytearray)):
        size = len(source)
    elif isinstance(source, (str, Path)) and Path(source).is_file():
        size = Path(source).stat().st_size
    if size is not None and size > limits.max_upload_mb * 1024 * 1024:
        raise InputError(f"the file is too large ({size / 1024 / 1024:.1f} MB; the limit is "
                         f"{limits.max_upload_mb:g} MB)")


def check_audio_length(samples: np.ndarray, limits: LimitSettings) -> None:
    seconds = len(samples) / SAMPLE_RATE
    if seconds > limits.max_audio_seconds:
        raise InputError(f"the recording is {seconds:.0f} s long; the limit is {limits.max_audio_seconds:g} s")


def is_silence(samples: np.ndarray, limits: LimitSettings) -> bool:
    """True when fewer than `min_speech_seconds` of 20 ms frames rise above `silence_dbfs`.

    Decided on the audio itself, not on a transcript: in speech mode `features` there is none, and
    Whisper invents words on silence.
    """
    frame = SAMPLE_RATE // 50
    usable = len(samples) - len(samples) % frame
    if usable == 0:
        return True
    rms = np.sqrt(np.mean(samples[:usable].reshape(-1, frame).astype(np.float64) ** 2, axis=1))
    loud_frames = int(np.sum(20 * np.log10(np.maximum(rms, 1e-10)) > limits.silence_dbfs))
    return loud_frames * frame / SAMPLE_RATE < limits.min_speech_seconds
