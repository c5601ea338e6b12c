"""Hands-free in a real browser: after one tap on Record, a question spoken into the (fake) microphone about
an uploaded picture is noticed, answered and spoken, with no click on Send and none to stop recording.

Chromium's fake microphone plays a prepared WAV once: the question, then silence. See test_browser.py for how
Chromium is found or installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_app import QUESTION, serving
from test_browser import ANSWERS, QUESTIONS, browser, open_page, pipeline  # noqa: F401 (fixtures)
from tests_support import circle_scene

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spoken_question(pipeline, tmp_path_factory) -> Path:  # noqa: F811 (this file's microphone hears this)
    """Two seconds of quiet (as after a tap, before one speaks: the microphone's first moments may not
    reach the stream), QUESTION in the Piper voice, then four seconds of silence."""
    voice = pipeline.speech_out
    pause = np.zeros(voice.sample_rate // 2, dtype=np.float32)
    path = tmp_path_factory.mktemp("speech") / "question-then-silence.wav"
    sf.write(path, np.concatenate([*[pause] * 4, voice.speak_all(QUESTION.capitalize()), *[pause] * 8]),
             voice.sample_rate)
    return path


def test_one_tap_then_a_spoken_question_is_answered_without_send(browser, pipeline, tmp_path):  # noqa: F811
    with serving(pipeline, tmp_path / "uploads", hands_free=True) as (url, _):
        page = open_page(browser, url)
        page.locator("#image-in input[type=file]").set_input_files(circle_scene(tmp_path, "green"))
        page.locator("#image-in img").wait_for()
        page.locator("#listen button", has_text="Record").first.click()  # the one tap
        page.wait_for_function(f"() => ({ANSWERS})().length === 1")
        page.wait_for_function(f"() => ({ANSWERS})()[0] === 'green'")
        heard = " ".join(page.evaluate(QUESTIONS))
        assert "circle" in heard.lower(), heard
        # The reply is spoken: the player receives the stream and plays it.
        page.wait_for_function("() => { const a = document.querySelector('#reply-audio audio');"
                               " return a && a.currentSrc && a.currentTime > 0; }")
        assert page.locator("#send").count() == 1  # there, and never pressed
        # The microphone was asked for echo cancellation (the assistant's voice must not interrupt it).
        settings = page.evaluate("() => navigator.mediaDevices.getUserMedia({audio: true})"
                                 ".then(s => s.getAudioTracks()[0].getSettings())")
        assert settings.get("echoCancellation") is True, settings
        page.close()
