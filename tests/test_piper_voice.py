"""The Piper voice (onnxruntime + espeak-ng phonemes): ids, audio and errors (its WER: test_speech.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from decoders.tts import piper
from decoders.tts.piper import PiperVoice, bundled_voice_paths
from mmdialog.errors import ModelNotAvailableError


@pytest.fixture(scope="module")
def voice() -> PiperVoice:
    try:
        return PiperVoice.load(*bundled_voice_paths())
    except ModelNotAvailableError as exc:
        pytest.skip(str(exc))


def test_phonemize_one_list_per_sentence_keeps_punctuation(voice: PiperVoice) -> None:
    sentences = voice.phonemize("Hello there, how are you? The shop opens at nine: yes!")
    assert len(sentences) == 2
    assert all(sentences) and all(isinstance(p, str) and len(p) == 1 for s in sentences for p in s)
    first, second = ("".join(s) for s in sentences)
    assert first.endswith("?") and ", " in first and "ˈ" in first
    assert second.endswith("!") and ": " in second
    assert voice.phonemize("") == [] and voice.phonemize(" ... ") == []


def test_phoneme_ids_bos_pads_eos(voice: PiperVoice) -> None:
    phonemes = voice.phonemize("What colour is this?")[0]
    ids = voice.phoneme_ids(phonemes)
    id_map = voice._id_map
    pad = id_map["_"][0]
    assert ids[0] == id_map["^"][0] and ids[-1] == id_map["$"][0]
    assert ids[1::2] == [pad] * (len(ids) // 2)  # a pad after BOS and after every phoneme
    assert len(ids) == 2 * len(phonemes) + 3
    assert voice.phoneme_ids(["h", "\u2603", "a"]) == voice.phoneme_ids(["h", "a"])  # unknown: skipped


def test_synthesize_audio_grows_with_text(voice: PiperVoice) -> None:
    short = voice.synthesize("Hello.")
    long = voice.synthesize("Hello. The blue square is next to the yellow triangle on the left.")
    assert voice.sample_rate == 22050
    for audio in (short, long):
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0 and np.abs(audio).max() > 0.01
    assert len(long) > 2 * len(short)
    assert len(voice.synthesize("Hello.", length_scale=1.5)) > len(short)


def test_synthesize_sentences_yields_one_chunk_per_sentence(voice: PiperVoice) -> None:
    chunks = list(voice.synthesize_sentences("Good morning. What shape is this? It is a circle!"))
    assert len(chunks) == 3
    assert all(c.dtype == np.float32 and len(c) > voice.sample_rate // 4 for c in chunks)


def test_missing_files_and_program_raise_model_not_available(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        PiperVoice.load(tmp_path / "missing.onnx")
    onnx = tmp_path / "voice.onnx"
    onnx.write_bytes(b"not a model")
    with pytest.raises(ModelNotAvailableError, match="config"):
        PiperVoice.load(onnx)
    config = '{"phoneme_id_map": {"_": [0]}, "audio": {"sample_rate": 1}}'
    onnx.with_name("voice.onnx.json").write_text(config)
    monkeypatch.setattr(piper.shutil, "which", lambda name: None)
    with pytest.raises(ModelNotAvailableError, match="apt-get install espeak-ng"):
        PiperVoice.load(onnx)


