"""What an operator relies on: one private JSON line per turn, and a per-client limit on turns."""

from __future__ import annotations

import json
import logging

import pytest
from conftest import make_image
from gradio_client import Client

from app.rate_limit import RateLimiter
from mmdialog.errors import InputError
from mmdialog.pipeline import DialoguePipeline
from mmdialog.turn_log import TURN_LOGGER

SECRET = "my pin is 4711, what colour is it?"


def turn_lines(caplog) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == TURN_LOGGER]


def test_one_json_line_per_turn_with_timings_and_no_user_text(tiny_model, caplog, tmp_path):
    pipeline = DialoguePipeline(tiny_model, None, tiny_model.config)
    caplog.set_level(logging.DEBUG)  # everything any logger writes is checked for the secret
    session = pipeline.new_session()
    pipeline.respond(session, text=SECRET, image=make_image((0, 200, 0)), max_new_tokens=4)
    pipeline.respond(session, text="x" * 10_000)  # refused: too long
    (tmp_path / "secret-4711.png").write_bytes(b"not a picture")
    pipeline.respond(session, text=SECRET, image=tmp_path / "secret-4711.png")
    lines = turn_lines(caplog)
    assert [(line["turn"], line["outcome"], line["error_class"]) for line in lines] == [
        (1, "answered", None), (2, "refused", "InputError"), (3, "refused", "InputError")]
    first = lines[0]
    assert first["session"] == session.id and first["inputs"] == {"text_chars": len(SECRET), "image": True,
                                                                  "audio": False}
    assert {"vision_encode", "fusion", "generation", "total"} <= set(first["timings_ms"])
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert "4711" not in everything and "pin" not in everything


def test_user_text_is_logged_only_when_the_operator_asks(tiny_model, caplog):
    config = tiny_model.config
    config.runtime.log_user_text = True
    try:
        pipeline = DialoguePipeline(tiny_model, None, config)
        caplog.set_level(logging.INFO, logger=TURN_LOGGER)
        pipeline.respond(pipeline.new_session(), text=SECRET, max_new_tokens=2)
    finally:
        config.runtime.log_user_text = False
    (line,) = turn_lines(caplog)
    assert line["text"] == SECRET and isinstance(line["reply"], str)


def test_rate_limiter_counts_each_client_in_a_sliding_window():
    now = [0.0]
    limiter = RateLimiter(3, window_seconds=60, clock=lambda: now[0])
    for _ in range(3):
        limiter.check("10.0.0.1")
    with pytest.raises(InputError, match="wait 60 s"):
        limiter.check("10.0.0.1")
    limiter.check("10.0.0.2")  # another client is not affected
    now[0] = 59.0
    with pytest.raises(InputError, match="wait 1 s"):
        limiter.check("10.0.0.1")
    now[0] = 60.5
    limiter.check("10.0.0.1")
    now[0] = 500.0
    limiter.check("10.0.0.3")
    assert len(limiter) == 1, "clients quiet for a whole window are forgotten"
    RateLimiter(0).check("anyone")  # 0: no limit


@pytest.mark.slow
def test_the_app_limits_turns_per_client(tmp_path):
    from test_app import QUESTION, demo_pipeline, serving, turn
    from tests_support import circle_scene

    picture = circle_scene(tmp_path, "blue")
    with serving(demo_pipeline(), tmp_path / "uploads", rate_limit_per_minute=3) as (url, _):
        client = Client(url, verbose=False)
        replies = [turn(client, QUESTION, picture) for _ in range(4)]
    assert [r[0] for r in replies[:3]] == ["blue"] * 3
    reply, _, spoken, _, _, error = replies[3]
    assert error.startswith("too many turns") and reply.startswith("Sorry: too many turns") and spoken is None
