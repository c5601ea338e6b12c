"""Feedback in the app: ratings and suggested answers kept as training data, only when the operator turned it
on and the visitor did not opt out; a kiosk with feedback off keeps nothing."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio_client import Client
from test_app import QUESTION, demo_pipeline, serving, turn
from tests_support import circle_scene

from mmdialog.data.format import load_records, parse_dialogue
from mmdialog.feedback.export import export_feedback

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def talked_with(tmp_path: Path, colour: str, **settings: object) -> Iterator[tuple[Client, str, object]]:
    """A served demo app (feedback settings as given) and one conversation that asked about a `colour` circle:
    (client, session id, the app's state)."""
    with serving(demo_pipeline(), tmp_path / "uploads", **settings) as (url, blocks):
        client = Client(url, verbose=False)
        reply, _, _, _, session_id, _ = turn(client, QUESTION, circle_scene(tmp_path, colour))
        assert reply == colour
        yield client, session_id, blocks.mmdialog_state


def test_ratings_and_corrections_are_kept_as_training_data(tmp_path):
    feedback_dir = tmp_path / "feedback"
    picture = tmp_path / "green.png"
    with talked_with(tmp_path, "green", feedback=True, feedback_dir=str(feedback_dir)) as (client, session_id, _):
        assert client.predict(session_id, "up", "", api_name="/feedback") == "saved"
        reply, *_ = turn(client, "is there a star?", None, session_id)
        assert client.predict(session_id, "down", "Yes, a purple star.", api_name="/feedback") == "saved"
        assert client.predict(session_id, "sideways", "", api_name="/feedback").startswith("rating must be")
        # Another conversation that never rated anything, and one with nothing to rate.
        turn(client, QUESTION, picture)
        assert client.predict("", "up", "", api_name="/feedback") == "there is no answer to rate yet"
        client.predict(session_id, api_name="/reset")  # the uploads go; the kept copies stay

    lines = [json.loads(line) for line in (feedback_dir / "feedback.jsonl").read_text().splitlines()]
    assert [line["feedback"] for line in lines] == [{"rating": "up", "correction": None},
                                                    {"rating": "down", "correction": "Yes, a purple star."}]
    first, second = lines
    assert [t["text"] for t in first["turns"]] == [QUESTION, "green"]
    assert [t["text"] for t in second["turns"]] == [QUESTION, "green", "is there a star?", reply]
    assert (feedback_dir / first["turns"][0]["images"][0]).read_bytes() == picture.read_bytes()
    # The training data format: `mmdialog train`'s validation reads it, and export makes both datasets.
    records, report = load_records(feedback_dir / "feedback.jsonl", parse_dialogue)
    assert len(records) == 2 and report.skipped == 0
    summary = export_feedback(feedback_dir, tmp_path / "export")
    print(summary)
    supervised = [json.loads(x) for x in (tmp_path / "export" / "supervised.jsonl").read_text().splitlines()]
    preferences = [json.loads(x) for x in (tmp_path / "export" / "preferences.jsonl").read_text().splitlines()]
    assert [s["turns"][-1]["text"] for s in supervised] == ["green", "Yes, a purple star."]
    assert [(p["chosen"], p["rejected"]) for p in preferences] == [("Yes, a purple star.", reply)]


def test_opting_out_keeps_nothing_and_deletes_what_was_given(tmp_path):
    from app.feedback_handlers import FeedbackHandlers

    feedback_dir = tmp_path / "feedback"
    with talked_with(tmp_path, "blue", feedback=True, feedback_dir=str(feedback_dir)) as (client, session_id, state):
        assert client.predict(session_id, "down", "It is blue.", api_name="/feedback") == "saved"
        conversation = state.api.get(session_id)
        FeedbackHandlers(state).opt_out(conversation, keep=False)
        assert client.predict(session_id, "up", "", api_name="/feedback").startswith("you opted out")
    assert (feedback_dir / "feedback.jsonl").read_text() == ""
    assert list((feedback_dir / "media").iterdir()) == []


def test_a_kiosk_with_feedback_off_writes_nothing(tmp_path):
    feedback_dir = tmp_path / "feedback"
    feedback_dir.mkdir()
    with talked_with(tmp_path, "yellow", kiosk=True, feedback_dir=str(feedback_dir)) as (client, session_id, _):
        assert client.predict(session_id, "down", "It is yellow.", api_name="/feedback") == \
            "feedback is off on this server"
    assert list(feedback_dir.rglob("*")) == []
