"""Hands-free at the pipeline level: a spoken turn detected and answered from the microphone stream, and a
barge-in that cuts the streamed reply short and becomes the next turn (the demo model, Whisper, Piper)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from test_app import demo_pipeline
from test_turn_taking import silence, spoken, with_room_noise
from tests_support import circle_scene

from encoders.vad import SAMPLE_RATE
from mmdialog.hands_free import PIECE_SECONDS, HandsFreeConversation

pytestmark = [pytest.mark.slow, pytest.mark.real_weights]
CHUNK = SAMPLE_RATE // 4  # the microphone's 250 ms chunks


def turns_from(conversation: HandsFreeConversation, audio: np.ndarray, paced: bool = False) -> list:
    events = []
    for i in range(0, len(audio), CHUNK):
        events += conversation.listen(audio[i:i + CHUNK], SAMPLE_RATE)
        if paced:
            time.sleep(CHUNK / SAMPLE_RATE)
    return events


def test_speech_over_the_reply_cancels_the_rest_and_is_the_next_turn(tmp_path):
    pipeline = demo_pipeline()
    conversation = HandsFreeConversation(pipeline)
    conversation.image = circle_scene(tmp_path, "green")
    question = with_room_noise(np.concatenate([silence(0.3), spoken("what do you see?"), silence(1.0)]))
    (turn,) = [e for e in turns_from(conversation, question) if e.kind == "turn"]

    pieces, replies = [], []

    def play() -> None:
        for event in conversation.respond(turn):
            if event.kind == "audio":
                pieces.append(event.audio)
            elif event.kind in ("done", "error"):
                replies.append(event.reply)

    player = threading.Thread(target=play)
    player.start()
    while not pieces and player.is_alive():
        time.sleep(0.01)
    # The person speaks over the reply, as a microphone delivers it: in real time.
    events = turns_from(conversation, with_room_noise(np.concatenate([spoken("what color is the circle?"),
                                                                      silence(1.0)])), paced=True)
    player.join(timeout=60)
    (reply,) = replies
    full = pipeline.speech_out.speak_all(reply.text)
    print(f"reply {reply.text!r}: {len(full) / pipeline.speech_out.sample_rate:.2f} s, "
          f"{sum(map(len, pieces)) / pipeline.speech_out.sample_rate:.2f} s sent before the barge-in")
    assert len(full) / pipeline.speech_out.sample_rate >= 4 * PIECE_SECONDS, "the reply is too short to cut"
    assert [e.kind for e in events] == ["barge_in", "turn"]
    assert sum(map(len, pieces)) < 0.8 * len(full), "the rest of the reply was not dropped"
    last = conversation.session.history[-1]
    assert last.role == "assistant" and last.interrupted
    assert reply.text.startswith(last.text)

    answer = [e.reply.text for e in conversation.respond(events[-1]) if e.kind == "done"]
    assert answer == ["green"]
    assert not conversation.session.history[-1].interrupted
