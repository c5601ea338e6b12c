"""Every case of the adversarial corpus through the pipeline and through the Gradio API (gradio_client):
unusual but valid input gets the ordinary answer, invalid input a clear one-line message, nothing escapes,
and the same conversation answers a normal next turn. Paths that climb out of the upload folder and links
are refused, and the link is never fetched."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from adversarial_corpus import QUESTION, Case, build_corpus, ordinary_spoken_question
from gradio import processing_utils
from gradio_client import Client, handle_file
from test_app import TIMEOUT, demo_pipeline, serving
from tests_support import circle_scene

from app.api import DialogueAPI
from app.uploads import LINKS_REFUSED
from mmdialog.session import Reply

pytestmark = pytest.mark.slow

COLOUR = "green"  # the circle's colour in the corpus's scene: the answer to QUESTION


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[Case], dict[str, str]]:
    pipeline = demo_pipeline()
    folder = tmp_path_factory.mktemp("corpus")
    scene = circle_scene(folder, COLOUR)
    voice = pipeline.speech_out
    cases = build_corpus(folder / "cases", scene, (voice.sample_rate, voice.speak_all(QUESTION)))
    ordinary = {"typed": pipeline.respond(pipeline.new_session(), text=QUESTION, image=scene).text,
                "spoken": pipeline.respond(pipeline.new_session(), image=scene,
                                           audio=ordinary_spoken_question(folder / "cases")).text}
    assert ordinary["typed"] == COLOUR, ordinary
    return scene, cases, ordinary


def check(case: Case, text: str, error: str | None, ordinary: dict[str, str]) -> None:
    if case.expect == "refuse":
        assert error and text.startswith("Sorry") and "\n" not in text, (case.name, text)
        assert all(word in text for word in case.words), (case.name, text)
        assert "/tmp" not in text and "/work" not in text, f"{case.name}: the message shows server folders"
    elif case.expect == "answer":
        assert not error, (case.name, text, error)
        if case.words:
            assert all(word in text for word in case.words), (case.name, text)
        else:
            assert text == ordinary["spoken" if case.spoken else "typed"], (case.name, text)
    else:
        assert text and (not error or text.startswith("Sorry")), (case.name, text, error)


def case_inputs(case: Case, scene: Path) -> dict:
    inputs = case.inputs()
    if case.spoken:  # a spoken question about the picture
        inputs["image"] = str(scene)
    return inputs


@pytest.fixture(scope="module")
def link_target() -> Iterator[tuple[str, list[str]]]:
    """A local web server holding a picture: any request it receives means a link in a turn was fetched."""
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            requests.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/picture.png", requests
    finally:
        server.shutdown()


# ---- the pipeline ------------------------------------------------------------------------------------------

def test_every_corpus_case_through_the_pipeline(corpus) -> None:
    scene, cases, ordinary = corpus
    pipeline = demo_pipeline()
    for case in cases:
        session = pipeline.new_session()
        reply: Reply = pipeline.respond(session, **case_inputs(case, scene))
        check(case, reply.text, reply.error, ordinary)
        if reply.error:
            assert session.history == [], f"{case.name}: a refused turn entered the history"
        assert pipeline.respond(session, text=QUESTION, image=scene).text == COLOUR, f"after {case.name}"


def test_the_pipeline_never_fetches_a_link_and_names_no_folder(corpus, link_target, tmp_path) -> None:
    scene, _, _ = corpus
    url, requests = link_target
    pipeline = demo_pipeline()
    session = pipeline.new_session()
    for inputs in ({"text": QUESTION, "image": url}, {"audio": url.replace(".png", ".wav")},
                   {"text": QUESTION, "image": "file:///etc/passwd"}):
        reply = pipeline.respond(session, **inputs)
        assert reply.error and "links are not fetched" in reply.text, reply.text
    assert requests == []
    climbing = tmp_path / "uploads" / ".." / ".." / ".." / ".." / ".." / ".." / "etc" / "passwd"
    reply = pipeline.respond(session, text=QUESTION, image=str(climbing))
    assert reply.error and "'passwd'" in reply.text and str(tmp_path) not in reply.text, reply.text
    assert pipeline.respond(session, text=QUESTION, image=scene).text == COLOUR


# ---- the Gradio API ----------------------------------------------------------------------------------------

def api_turn(client: Client, session_id: str, text: str | None = None, image: object = None,
             audio: object = None) -> tuple[str, str | None, str]:
    """(reply, error or None, session id); files given as paths are uploaded, dicts sent as they are."""
    def payload(value: object) -> object:
        return handle_file(value) if isinstance(value, str) else value

    reply, _, _, _, session_id, error = client.submit(text or "", payload(image), payload(audio), session_id,
                                                      api_name="/turn").result(timeout=TIMEOUT)
    return reply, error or None, session_id


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[tuple[Client, Path, DialogueAPI]]:
    uploads = tmp_path_factory.mktemp("uploads")
    with serving(demo_pipeline(), uploads) as (url, blocks):
        yield Client(url, verbose=False), uploads, DialogueAPI(blocks.mmdialog_state)


def test_every_corpus_case_through_the_api(corpus, api) -> None:
    scene, cases, ordinary = corpus
    client, _, _ = api
    for case in cases:
        inputs = case_inputs(case, scene)
        reply, error, session_id = api_turn(client, "", **inputs)
        check(case, reply, error, ordinary)
        reply, error, _ = api_turn(client, session_id, QUESTION, str(scene))
        assert (reply, error) == (COLOUR, None), f"after {case.name}"


def raw_turn(url: str, text: str, image: dict) -> tuple[str | None, str | None]:
    """A turn sent as bare HTTP, the way a hostile script would (gradio_client would upload a local path itself,
    never sending it as it is): (reply, error or None); the reply is None when Gradio turned the request away
    (the error is then the message Gradio shows, if any)."""
    def call(request: urllib.request.Request) -> bytes:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.read()

    body = json.dumps({"data": [text, image, None, ""]}).encode()
    started = json.loads(call(urllib.request.Request(f"{url}gradio_api/call/turn", body,
                                                     {"Content-Type": "application/json"})))
    stream = call(urllib.request.Request(f"{url}gradio_api/call/turn/{started['event_id']}")).decode()
    event, data = stream.strip().split("\n")[-2:]
    if event == "event: error":
        return None, json.loads(data.removeprefix("data: "))["error"]
    assert event == "event: complete", stream[-2000:]
    reply, _, _, _, _, error = json.loads(data.removeprefix("data: "))
    return reply, error or None


def test_the_api_opens_only_its_own_uploads_and_never_fetches_links(corpus, api, link_target, monkeypatch) -> None:
    scene, _, _ = corpus
    client, uploads, dialogue_api = api
    link, requests = link_target
    downloads: list[str] = []  # Gradio's downloader (the server runs in this process): it must never be called

    async def download(url: str, *args, **kwargs) -> str:
        downloads.append(url)
        raise AssertionError("a link was fetched")

    monkeypatch.setattr(processing_utils, "async_ssrf_protected_download", download)
    outside = [str(uploads / ".." / scene.parent.name / scene.name), str(scene), "/etc/passwd", link,
               "https://example.com/picture.png"]
    for path in outside:
        payload = {"path": path, "url": path, "meta": {"_type": "gradio.FileData"}}
        reply, error = raw_turn(client.src, QUESTION, payload)
        if reply is not None:  # Gradio let it through: the app must refuse it
            assert error and "not uploaded" in reply, (path, reply)
        elif path.startswith("http"):  # refused before any connection, saying why
            assert error == LINKS_REFUSED, error
        # Behind Gradio, the app checks for itself (its endpoint takes payloads unpreprocessed).
        reply, _, _, _, session_id, error = dialogue_api.turn(QUESTION, payload, None, "")
        assert error and reply.startswith("Sorry") and "not uploaded" in reply, (path, reply)
        assert api_turn(client, session_id, QUESTION, str(scene))[:2] == (COLOUR, None)
    assert requests == [] and downloads == [], "a link in a request was fetched"
