"""The page in a real browser (headless Chromium driven by Playwright): a typed question about an uploaded
picture, a spoken question (uploaded, and recorded from a fake microphone), the streamed voice, and the kiosk's
idle reset that deletes the visitor's files.

Chromium comes from Debian (`apt-get install -y chromium`; installed here when missing and running as root):
Playwright's own browser download is not reachable offline. A screenshot of the page is saved to
$MMDIALOG_ARTIFACTS (default: artifacts/ in the repository).
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_app import QUESTION, demo_pipeline, serving
from tests_support import circle_scene

from mmdialog.pipeline import DialoguePipeline

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("MMDIALOG_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))
WAIT_MS = 30_000  # the longest any one wait in the page may take

# Browser side: the chat's answers and questions (a message with a picture and text is several elements),
# and whether the last turn is done (its latency line shown).
ANSWERS = "() => [...document.querySelectorAll('#chat [data-testid=bot]')].map(m => m.innerText.trim())"
QUESTIONS = "() => [...document.querySelectorAll('#chat [data-testid=user]')].map(m => m.innerText.trim())"
TURN_DONE = "() => (document.querySelector('#latency')?.innerText || '').includes('total')"


def _install_chromium() -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("Chromium is not installed and cannot be installed here: run `apt-get install -y chromium`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = ((["apt-get", "update", "-qq"], 600), (["apt-get", "install", "-y", "-qq", "chromium"], 1200))
    for command, limit in steps:
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            pytest.skip(f"installing Chromium took over {limit} s: {' '.join(command)}")
        if done.returncode != 0:
            pytest.skip(f"could not install Chromium ({' '.join(command)}): {done.stderr.strip()[-300:]}")


@pytest.fixture(scope="module")
def pipeline() -> DialoguePipeline:
    return demo_pipeline()


@pytest.fixture(scope="module")
def spoken_question(pipeline, tmp_path_factory) -> Path:
    """QUESTION in the Piper voice, with silence around it (a recording starts before one speaks)."""
    voice = pipeline.speech_out
    pause = np.zeros(voice.sample_rate // 2, dtype=np.float32)
    path = tmp_path_factory.mktemp("speech") / "question.wav"
    sf.write(path, np.concatenate([pause, voice.speak_all(QUESTION.capitalize()), pause]), voice.sample_rate)
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory, spoken_question) -> Iterator[object]:
    """Headless Chromium with a fresh profile, allowed to play the reply without a click (as the kiosk's is),
    and a fake microphone that hears `spoken_question` once."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright (a dev dependency) is not installed")
    if not CHROMIUM.exists():
        _install_chromium()
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--no-first-run", "--autoplay-policy=no-user-gesture-required", "--use-fake-ui-for-media-stream",
             "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={spoken_question}%noloop"]
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
            args=flags, viewport={"width": 1200, "height": 860}, permissions=["microphone"], timeout=WAIT_MS)
        context.set_default_timeout(WAIT_MS)
        yield context
        context.close()


def open_page(browser, url: str):
    page = browser.new_page()
    started = time.perf_counter()
    page.goto(url, wait_until="load")
    page.locator("#send").wait_for()
    print(f"page load: {(time.perf_counter() - started) * 1000:.0f} ms")
    return page


def send(page) -> float:
    """Press Send and wait for the whole turn; returns the seconds from the click to the finished answer."""
    started = time.perf_counter()
    page.locator("#send").click()
    page.wait_for_function(TURN_DONE)
    return time.perf_counter() - started


def test_a_typed_question_about_a_picture_is_answered_aloud_and_new_conversation_clears_it(browser, pipeline, tmp_path):
    uploads = tmp_path / "uploads"
    with serving(pipeline, uploads) as (url, _):
        page = open_page(browser, url)
        page.locator("#image-in input[type=file]").set_input_files(circle_scene(tmp_path, "blue"))
        page.locator("#image-in img").wait_for()
        page.locator("#text-in textarea").fill(QUESTION)
        seconds = send(page)
        print(f"turn seen in the browser: {seconds * 1000:.0f} ms; {page.locator('#latency').inner_text()}")
        assert page.evaluate(ANSWERS) == ["blue"]
        assert QUESTION in " ".join(page.evaluate(QUESTIONS))
        assert page.locator("#chat [data-testid=user] img").count() == 1  # the picture's thumbnail
        # The spoken reply streams in (HLS) and plays by itself.
        page.wait_for_function("() => { const a = document.querySelector('#reply-audio audio');"
                               " return a && a.currentSrc && a.currentTime > 0; }")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=ARTIFACTS / "screenshot.png", full_page=True)

        assert [p.name for p in uploads.rglob("*") if p.is_file()] == ["blue.png"]  # circle_scene's name
        page.locator("#new").click()
        page.wait_for_function(f"() => ({ANSWERS})().length === 0 && ({QUESTIONS})().length === 0")
        assert [p for p in uploads.rglob("*") if p.is_file()] == []
        page.close()


@pytest.mark.parametrize("source", ["upload", "microphone"])
def test_a_spoken_question_shows_its_transcript_and_gets_an_answer(browser, pipeline, spoken_question, tmp_path,
                                                                   source):
    with serving(pipeline, tmp_path / "uploads") as (url, _):
        page = open_page(browser, url)
        page.locator("#image-in input[type=file]").set_input_files(circle_scene(tmp_path, "green"))
        page.locator("#image-in img").wait_for()
        if source == "upload":
            page.locator("#audio-in button[aria-label='Upload file']").click()
            page.locator("#audio-in input[type=file]").set_input_files(spoken_question)
            page.locator("#audio-in audio[src]").wait_for(state="attached")
        else:  # record from the fake microphone, then stop: the recording waits in the player until Send
            page.locator("#audio-in button", has_text="Record").first.click()
            page.wait_for_timeout(sf.info(spoken_question).duration * 1000 + 500)
            page.locator("#audio-in button", has_text="Stop").first.click()
            page.locator("#audio-in button", has_text="1x").wait_for()  # the player's speed button: recorded
        seconds = send(page)
        print(f"spoken turn ({source}) seen in the browser: {seconds * 1000:.0f} ms; "
              f"{page.locator('#latency').inner_text()}")
        answer, heard = page.evaluate(ANSWERS)[-1], " ".join(page.evaluate(QUESTIONS))
        assert answer == "green", answer
        assert "heard:" in heard and "circle" in heard.lower(), heard
        page.close()


def test_a_visitor_waiting_for_a_busy_model_sees_their_place_in_the_queue(browser, pipeline, tmp_path):
    release = threading.Event()
    held = copy.copy(pipeline)  # the same model, with turns that wait until the test lets them go

    def stream_when_released(*args, **kwargs):
        release.wait(WAIT_MS / 1000)
        yield from pipeline.stream(*args, **kwargs)

    held.stream = stream_when_released
    with serving(held, tmp_path / "uploads", concurrency=1) as (url, _):
        first, second = open_page(browser, url), open_page(browser, url)
        for page in (first, second):
            page.locator("#text-in textarea").fill("thank you")
            page.locator("#send").click()
        second.locator("#chat [data-testid=status-tracker]", has_text="queue: 1/1").wait_for()
        release.set()
        for page in (first, second):
            page.wait_for_function(TURN_DONE)
            assert page.evaluate(ANSWERS) == ["you are welcome"]
            page.close()


def test_the_kiosk_starts_over_when_left_alone_and_deletes_the_visitor_s_files(browser, pipeline, tmp_path):
    uploads = tmp_path / "kiosk-uploads"
    with serving(pipeline, uploads, kiosk=True, kiosk_idle_seconds=3.0) as (url, blocks):
        page = open_page(browser, url)
        welcome = blocks.mmdialog_state.settings.welcome
        assert page.evaluate(ANSWERS) == [welcome]
        page.locator("#image-in input[type=file]").set_input_files(circle_scene(tmp_path, "orange"))
        page.locator("#image-in img").wait_for()
        page.locator("#text-in textarea").fill(QUESTION)
        send(page)
        left_alone = time.perf_counter()
        assert page.evaluate(ANSWERS) == [welcome, "orange"]
        assert [p.name for p in uploads.rglob("*") if p.is_file()] == ["orange.png"]

        page.wait_for_function(f"() => ({ANSWERS})().length === 1 && ({QUESTIONS})().length === 0")
        idle = time.perf_counter() - left_alone
        assert page.evaluate(ANSWERS) == [welcome]
        assert idle > 2.5, f"reset after {idle:.1f} s, before the 3 s idle timeout"
        assert [p for p in uploads.rglob("*") if p.is_file()] == []
        page.close()


def test_a_thumb_down_and_a_better_answer_are_kept_and_opting_out_deletes_them(browser, pipeline, tmp_path):
    import json

    feedback = tmp_path / "feedback"
    with serving(pipeline, tmp_path / "uploads", feedback=True, feedback_dir=str(feedback)) as (url, _):
        page = open_page(browser, url)
        page.locator("#image-in input[type=file]").set_input_files(circle_scene(tmp_path, "purple"))
        page.locator("#image-in img").wait_for()
        page.locator("#text-in textarea").fill(QUESTION)
        send(page)
        assert page.evaluate(ANSWERS) == ["purple"]
        page.locator("#chat [data-testid=bot]").hover()
        page.locator("#chat button[aria-label='Dislike']").first.click()
        page.locator("#feedback").get_by_text("Feedback").first.click()  # open the panel
        page.locator("#feedback-text textarea").fill("The circle is purple.")
        page.locator("#feedback-send").click()
        page.locator("#feedback-status", has_text="saved").wait_for()
        (line,) = [json.loads(x) for x in (feedback / "feedback.jsonl").read_text().splitlines()]
        assert line["feedback"] == {"rating": "down", "correction": "The circle is purple."}
        assert [t["text"] for t in line["turns"]] == [QUESTION, "purple"]
        page.locator("#feedback-keep input").uncheck()
        deadline = time.monotonic() + WAIT_MS / 1000
        while (feedback / "feedback.jsonl").read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (feedback / "feedback.jsonl").read_text() == ""
        page.close()
