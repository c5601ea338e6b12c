"""Isolation under load: many clients talking at once get exactly what one quiet session would have got."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from gradio_client import Client
from test_app import TIMEOUT, demo_pipeline, serving, turn

from mmdialog.synth.render import draw, placed

pytestmark = pytest.mark.slow

CLIENTS, TURNS = 8, 25
QUESTIONS = ("what color is the circle?", "what do you see?", "is there a star?", "how many objects are there?",
             "where is the circle?", "what shape is the blue object?")
# Eight different pictures: (circle colour, other colour, other shape, the circle's column).
PICTURES = [("yellow", "blue", "star", 0), ("blue", "yellow", "cross", 2), ("green", "orange", "star", 0),
            ("orange", "green", "cross", 2), ("purple", "yellow", "star", 2), ("yellow", "purple", "cross", 0),
            ("blue", "green", "star", 2), ("green", "blue", "cross", 0)]


def _picture(folder: Path, index: int) -> Path:
    colour, other, shape, side = PICTURES[index]
    return draw(folder / f"client-{index}.png", placed(colour, "circle", side), placed(other, shape, 2 - side))


def _questions(index: int) -> list[str]:
    return [QUESTIONS[(index + t) % len(QUESTIONS)] for t in range(TURNS)]


def test_eight_clients_at_once_get_the_answers_of_a_quiet_session(tmp_path: Path) -> None:
    pipeline = demo_pipeline()
    pictures = [_picture(tmp_path, i) for i in range(CLIENTS)]
    expected = []
    for index, picture in enumerate(pictures):  # one quiet session per client, before any load
        session = pipeline.new_session()
        expected.append([pipeline.respond(session, text=q, image=picture if t == 0 else None).text
                         for t, q in enumerate(_questions(index))])

    answers: dict[int, list[str]] = {}
    errors: list[str] = []

    def talk(index: int) -> None:
        client, session_id, replies = Client(url, verbose=False), "", []
        for t, question in enumerate(_questions(index)):
            reply, _, _, _, session_id, error = turn(client, question, pictures[index] if t == 0 else None,
                                                      session_id)
            if error:
                errors.append(f"client {index}, turn {t}: {error}")
            replies.append(reply)
        answers[index] = replies

    with serving(pipeline, tmp_path / "uploads", concurrency=4) as (url, _):
        threads = [threading.Thread(target=talk, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=TURNS * TIMEOUT)
    assert errors == []
    assert sorted(answers) == list(range(CLIENTS)), "a client did not finish"
    for index in range(CLIENTS):
        assert answers[index] == expected[index], f"client {index} got another conversation's answers"
    # The pictures really decide the first answers: the conversations are not all alike.
    assert len({tuple(a) for a in expected}) == CLIENTS
