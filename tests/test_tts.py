"""Text to speech: normalization, sentence splitting, loudness, the Piper / Coqui / none backends via the factory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from decoders.tts.base import PEAK_DBFS, Speech, normalize_loudness
from decoders.tts.coqui import CoquiVoice
from decoders.tts.factory import build_synthesizer
from decoders.tts.text import normalize_text, split_sentences
from mmdialog.errors import ConfigError, ModelNotAvailableError
from mmdialog.settings import TTSBackend, TTSSettings


def _dbfs(audio: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))))


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("I have 3 apples and 1,234 pears.", "I have three apples and one thousand two hundred and thirty four pears."),
        ("Pi is 3.14 and -2 is negative.", "Pi is three point one four and minus two is negative."),
        ("She came 3rd, he 21st.", "She came third, he twenty first."),
        ("Born in 1999, raised in the 1990s, back in 2025.",
         "Born in nineteen ninety nine, raised in the nineteen nineties, back in twenty twenty five."),
        ("Meet at 10:30, 9:05 or 7:00.", "Meet at ten thirty, nine oh five or seven o'clock."),
        ("Open 9am to 5 p.m. Then closed.", "Open nine AM to five PM. Then closed."),
        ("It costs $5, €3.50, $1 or $0.99.",
         "It costs five dollars, three euros and fifty cents, one dollar or ninety nine cents."),
        ("A $2.5 million deal.", "A two point five million dollars deal."),
        ("Up 50% or 3.5 %, 5-10 times.", "Up fifty percent or three point five percent, five to ten times."),
        ("It is 21°C, -3 °C or 1°F.",
         "It is twenty one degrees Celsius, minus three degrees Celsius or one degree Fahrenheit."),
        ("Dr. Smith and Mrs. Jones met Mr. Lee on Main St. near St. Louis.",
         "Doctor Smith and Missus Jones met Mister Lee on Main Street near Saint Louis."),
        ("Fruit, e.g. apples, etc. That is approx. 5 kg.",
         "Fruit, for example apples, et cetera. That is approximately five kg."),
        ("The U.S. Army, i.e. soldiers.", "The US Army, that is soldiers."),
        ("Tom & Jerry: 2 + 2 = 4, mail me @ home.", "Tom and Jerry: two plus two equals four, mail me at home."),
        ("See **this** _word_ and `code` at https://example.com/a?b=1 now 😀👍🏽!", "See this word and code at now!"),
        ("# Plan\n- buy milk\n- call [Ann](http://x.y)\n\n```\nrm -rf /\n```\nDone", "Plan. Buy milk. Call Ann. Done."),
        ("A line that\nwraps.\n\n---\nNew paragraph\n\nLast one", "A line that wraps. New paragraph. Last one."),
    ],
)
def test_normalize_text(text: str, spoken: str) -> None:
    assert normalize_text(text) == spoken


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Dr. Smith is here. He weighs 3.5 kg, e.g. with boots. The U.S. Army came.",
         ["Dr. Smith is here.", "He weighs 3.5 kg, e.g. with boots.", "The U.S. Army came."]),
        ("Hi! How are you today? I am fine, thanks.", ["Hi! How are you today?", "I am fine, thanks."]),
        ('He said "Stop now." Then he left the room. What? Really!',
         ['He said "Stop now."', "Then he left the room. What? Really!"]),
        ("It is 5 p.m. and late. J. R. R. Tolkien wrote it.", ["It is 5 p.m. and late.", "J. R. R. Tolkien wrote it."]),
        ("First paragraph without a stop\n\nSecond one here", ["First paragraph without a stop", "Second one here"]),
        ("", []),
    ],
)
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


def test_split_sentences_cuts_long_sentences_at_commas() -> None:
    parts = split_sentences("word, " * 80 + "end.", max_chars=100)
    assert len(parts) > 1 and all(len(p) <= 100 for p in parts)
    assert " ".join(parts) == "word, " * 80 + "end."


def test_loudness_reaches_the_level_without_clipping_and_leaves_silence_alone() -> None:
    rate = 16_000
    t = np.arange(rate) / rate
    quiet_tone = (0.01 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    assert _dbfs(normalize_loudness(quiet_tone, -20.0, rate)) == pytest.approx(-20.0, abs=0.05)
    # Like speech: a few peaks far above the rest, which the gain to -20 dBFS alone would push past 1.0.
    peaky = quiet_tone * 5
    peaky[::2000] = 0.5
    loud = normalize_loudness(peaky, -20.0, rate)
    assert np.abs(loud).max() <= 10 ** (PEAK_DBFS / 20) + 1e-6
    assert _dbfs(loud) == pytest.approx(-20.0, abs=0.5)
    for silence in (np.zeros(rate, np.float32), np.full(rate, 1e-6, np.float32), np.zeros(0, np.float32)):
        out = normalize_loudness(silence, -20.0, rate)
        assert np.array_equal(out, silence) and np.isfinite(out).all()


class _Beeps:
    """A fake backend: a tone 0.05 s per character at 8 kHz, or silence for text starting with "Quiet"."""

    sample_rate = 8_000

    def synthesize_sentence(self, text: str) -> np.ndarray:
        t = np.arange(int(0.05 * len(text) * self.sample_rate)) / self.sample_rate
        level = 0.0 if text.startswith("Quiet") else 0.5
        return (level * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


def test_speech_chain_resamples_levels_and_skips_silence() -> None:
    speech = Speech(_Beeps(), sample_rate=16_000, loudness_dbfs=-23.0)
    chunks = list(speech.speak("Quiet sentences make no sound at all. The first one is heard. Then the second."))
    assert len(chunks) == 2
    assert len(chunks[0]) == pytest.approx(0.05 * len("The first one is heard.") * 16_000, rel=0.01)
    assert _dbfs(chunks[0]) == pytest.approx(-23.0, abs=0.1)
    assert not chunks[1][: int(0.2 * 16_000)].any()  # the pause before a later sentence
    assert list(speech.speak("")) == [] and list(speech.speak("**  ** 😀")) == []
    assert len(speech.speak_all("Hello there, friend. Bye now, friend.")) == sum(
        len(c) for c in speech.speak("Hello there, friend. Bye now, friend.")
    )


def test_none_backend_yields_no_audio() -> None:
    speech = build_synthesizer(TTSSettings(backend=TTSBackend.none))
    assert list(speech.speak("Hello there. How are you?")) == []
    assert speech.speak_all("Hello there.").size == 0


@pytest.mark.real_weights
def test_piper_through_the_factory_one_chunk_per_sentence_at_the_output_rate() -> None:
    try:
        speech = build_synthesizer(TTSSettings(voice="bundled:joe", sample_rate=16_000, loudness_dbfs=-20.0))
    except ModelNotAvailableError as exc:
        pytest.skip(str(exc))
    text = "Good morning, Dr. Smith. The red square costs $3.50 today. See you at 10:30!"
    chunks = list(speech.speak(text))
    assert len(chunks) == 3
    for chunk in chunks:
        assert chunk.dtype == np.float32 and np.isfinite(chunk).all()
        assert np.abs(chunk).max() <= 10 ** (PEAK_DBFS / 20) + 1e-6
        assert _dbfs(chunk) == pytest.approx(-20.0, abs=1.5)  # the pause before later chunks lowers it a bit
    seconds = sum(len(c) for c in chunks) / 16_000
    assert 3.0 < seconds < 15.0
    with pytest.raises(ConfigError, match="single speaker"):
        build_synthesizer(TTSSettings(voice="bundled:joe", speaker="amy"))
    faster = build_synthesizer(TTSSettings(voice="bundled:joe", sample_rate=16_000, speed=2.0))
    assert len(faster.speak_all("The red square costs three dollars.")) < len(
        speech.speak_all("The red square costs three dollars.")
    )


@pytest.mark.parametrize(
    ("settings", "error", "must_say"),
    [
        (TTSSettings(voice="bundled:nobody"), ModelNotAvailableError, "bundled voices: bundled:joe"),
        (TTSSettings(voice="/no/such/voice.onnx"), ModelNotAvailableError, "does not exist"),
        (TTSSettings(voice="en_US-lessac"), ConfigError, ".onnx"),
        (TTSSettings(backend=TTSBackend.coqui, voice=None, model_config="config.json"), ConfigError, "both"),
        (TTSSettings(backend=TTSBackend.none, speed=0.0), ConfigError, "tts.speed"),
    ],
)
def test_factory_errors_are_one_clear_line(settings: TTSSettings, error: type, must_say: str) -> None:
    with pytest.raises(error, match=must_say.replace(".", r"\.")) as caught:
        build_synthesizer(settings)
    assert "\n" not in str(caught.value)


def _write_tiny_vits(folder: Path, speakers: list[str] | None = None) -> tuple[Path, Path]:
    """A VITS with random weights and small dims, saved as Coqui saves a model: config.json + {"model": ...}."""
    from TTS.config.shared_configs import BaseAudioConfig
    from TTS.tts.configs.vits_config import VitsConfig
    from TTS.tts.models.vits import Vits, VitsArgs

    args = VitsArgs(
        hidden_channels=32, hidden_channels_ffn_text_encoder=64, num_layers_text_encoder=2,
        num_layers_posterior_encoder=2, num_layers_flow=2, upsample_initial_channel_decoder=32,
        resblock_kernel_sizes_decoder=[3], resblock_dilation_sizes_decoder=[[1, 3, 5]], init_discriminator=False,
    )
    if speakers:
        (folder / "speakers.json").write_text(json.dumps({name: i for i, name in enumerate(speakers)}))
        args.use_speaker_embedding, args.num_speakers = True, len(speakers)
        args.speakers_file, args.speaker_embedding_channels = str(folder / "speakers.json"), 16
    # No phonemes (no espeak-ng needed); no silence trimming, which would cut random audio at a random place.
    config = VitsConfig(model_args=args, use_phonemes=False, audio=BaseAudioConfig(do_trim_silence=False))
    torch.manual_seed(0)
    torch.save({"model": Vits(config).state_dict()}, folder / "model.pth")
    config.save_json(str(folder / "config.json"))
    return folder / "config.json", folder / "model.pth"


@pytest.fixture(scope="module")
def tiny_vits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _write_tiny_vits(tmp_path_factory.mktemp("vits"))


def test_coqui_vits_from_local_files_speaks_at_the_configured_rate(tiny_vits: tuple[Path, Path]) -> None:
    config, checkpoint = tiny_vits
    speech = build_synthesizer(TTSSettings(
        backend=TTSBackend.coqui, voice=None, model_config=str(config), model_checkpoint=str(checkpoint),
        sample_rate=24_000,
    ), device="cpu")
    assert speech.backend is not None and speech.backend.sample_rate == 22_050
    torch.manual_seed(0)  # VITS samples its durations
    short, long = speech.speak("Hello there, my friend. This second sentence is a good deal longer than the first.")
    for chunk in (short, long):
        assert chunk.dtype == np.float32 and np.isfinite(chunk).all() and np.abs(chunk).max() > 0
    assert len(long) - int(0.2 * 24_000) > len(short)
    ten_words = speech.speak_all("one two three four five six seven eight nine ten")
    assert 0 < len(ten_words) / 24_000 < 30


def test_coqui_unknown_speaker_lists_the_valid_ones(tmp_path: Path) -> None:
    config, checkpoint = _write_tiny_vits(tmp_path, speakers=["alice", "bob", "carol"])
    with pytest.raises(ConfigError, match="tts.speaker 'dave'.*alice, bob, carol"):
        CoquiVoice.from_files(config, checkpoint, speaker="dave")
    assert CoquiVoice.from_files(config, checkpoint, speaker="bob").synthesize_sentence("Hi there.").size > 0


def test_coqui_missing_models_fail_in_one_sentence_without_the_hub(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TTS_HOME", str(tmp_path))  # Coqui's model folder: empty
    monkeypatch.delenv("COQUI_TOS_AGREED", raising=False)
    monkeypatch.setattr("encoders.hub.hub_reachable", lambda: False)
    cases = {
        "tts_models/en/nobody/vits": "not a Coqui text-to-speech model",
        "tts_models/en/ljspeech/vits": "not available offline",
        "tts_models/multilingual/multi-dataset/xtts_v2": "COQUI_TOS_AGREED=1",
    }
    for name, must_say in cases.items():
        with pytest.raises(ModelNotAvailableError, match=must_say) as caught:
            build_synthesizer(TTSSettings(backend=TTSBackend.coqui, voice=name))
        assert "\n" not in str(caught.value)
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        CoquiVoice.from_files(tmp_path / "config.json", tmp_path / "model.pth")
