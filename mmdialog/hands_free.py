"""A conversation driven by a live microphone: turns detected, answered, spoken, and interrupted by speech.

Front-end independent (the Gradio page uses it; a test drives it with synthesized audio). The reply's audio
leaves here at playback speed, in short pieces, only a little ahead of what the listener hears: when the
person speaks over it (barge-in), the pieces not yet sent are dropped and the player falls silent as soon
as the few already sent have played, with no control of the player needed. The history keeps the reply as
far as it was heard, marked interrupted, and the new speech becomes the next turn.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np

from encoders.vad import SAMPLE_RATE
from mmdialog.pipeline import DialoguePipeline
from mmdialog.session import Event, Session
from mmdialog.turn_taking import TurnDetector, TurnEvent

PIECE_SECONDS = 0.2  # the reply's audio goes out in pieces this long
LEAD_SECONDS = 0.3  # and this far ahead of the playback position: smooth playback, a quick stop
ECHO_TAIL_SECONDS = 0.3  # the room still rings (and the player may lag) this long after the last piece


class HandsFreeConversation:
    def __init__(self, pipeline: DialoguePipeline, session: Session | None = None):
        self.pipeline = pipeline
        self.session = session or pipeline.new_session()
        config = pipeline.config
        self.detector = TurnDetector(config.turn_taking, config.limits.max_audio_seconds)
        self.image = None  # a picture shown since the last turn: it goes with the next one
        self._interrupt = threading.Event()
        self._speaking_until = 0.0  # time.monotonic() when the reply sent so far has finished playing

    @property
    def speaking(self) -> bool:
        return time.monotonic() < self._speaking_until

    def listen(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> list[TurnEvent]:
        """Take the next piece of the microphone stream; a barge-in stops the reply at once."""
        self.detector.assistant_speaking = self.speaking
        events = self.detector.feed(audio, sample_rate)
        if any(event.kind == "barge_in" for event in events):
            self.interrupt()
        return events

    def interrupt(self) -> None:
        """Stop the reply: nothing more is generated or sent, and the history says it was cut short."""
        if self.speaking and not self._interrupt.is_set():
            history = self.session.history
            if history and history[-1].role == "assistant":  # already written: the reply was fully generated
                history[-1].interrupted = True
        self._interrupt.set()
        self._speaking_until = 0.0

    def respond(self, turn: TurnEvent, **generation) -> Iterator[Event]:
        """Answer a detected turn: the pipeline's events, with audio paced at playback speed (see above)."""
        self._interrupt.clear()
        image, self.image = self.image, None
        heard: list[str] = []
        start, sent = None, 0.0
        stream = self.pipeline.stream(self.session, image=image, audio=(SAMPLE_RATE, turn.audio),
                                      interrupt=self._interrupt, **generation)
        for event in stream:
            if event.kind != "audio":
                yield event
                continue
            rate = self.pipeline.speech_out.sample_rate
            step = int(PIECE_SECONDS * rate)
            for offset in range(0, len(event.audio), step):
                start = time.monotonic() if start is None else start
                wait = start + sent - LEAD_SECONDS - time.monotonic()
                if self._interrupt.wait(max(wait, 0.0)):  # wakes early when the person barges in
                    break
                if offset == 0:  # the sentence has begun to play
                    heard.append(event.text)
                piece = event.audio[offset:offset + step]
                sent += len(piece) / rate
                self._speaking_until = start + sent + ECHO_TAIL_SECONDS
                yield Event("audio", audio=piece, text=event.text)
        if self._interrupt.is_set():
            self._keep_what_was_heard(heard)

    def _keep_what_was_heard(self, heard: list[str]) -> None:
        history = self.session.history
        if history and history[-1].role == "assistant":
            history[-1].text = " ".join(sentence.strip() for sentence in heard)
            history[-1].interrupted = True
