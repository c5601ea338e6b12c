"""Hands-free on the page: the microphone streams, turns are detected, answered and spoken, and speaking
over the reply interrupts it (mmdialog/hands_free.py does the work; this file connects it to Gradio).

Every 250 ms chunk of the stream calls `LiveHandlers.listen`: the chunk goes to the conversation's turn
detector, and a finished turn is answered in a worker thread. Gradio streams audio to the page only from a
generator, so `listen` then changes a hidden trigger whose event, `play`, streams the worker's reply audio
(paced at playback speed) and the chat until the reply ends or is cut short: a barge-in stops the reply
within the few hundred ms of audio already sent.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
import numpy as np

from app.feedback import Exchange
from app.handlers import wav_bytes
from app.rate_limit import client_address
from app.state import AppState, Conversation
from mmdialog.errors import InputError
from mmdialog.hands_free import HandsFreeConversation
from mmdialog.turn_taking import TurnEvent

INTERRUPTED_MARK = " …"  # shown after a reply the person spoke over
PLAY_POLL_SECONDS = 0.05


@dataclass
class Live:
    """One conversation's hands-free state."""

    talk: HandsFreeConversation
    picture: str | None = None  # the last picture given to `talk`
    audio: deque[np.ndarray] = field(default_factory=deque)  # reply audio not yet handed to the page
    worker: threading.Thread | None = None
    shown: object = None  # the chat as last handed to the page (the worker changes it between chunks)
    replies: int = 0

    def stop(self) -> None:
        self.talk.interrupt()


class LiveHandlers:
    def __init__(self, state: AppState):
        self.state = state

    def listen(self, conversation: Conversation | None, chunk: tuple[int, np.ndarray] | None, image: str | None,
               request: gr.Request | None = None) -> tuple[Any, Any, Any]:
        """One microphone chunk in; the chat (when it changed), the conversation, and a new value for the
        reply trigger when a turn was detected."""
        conversation = conversation or self.state.browser.open()
        live = conversation.live or self._start(conversation)
        skip = gr.skip()
        try:
            if image != live.picture:  # a new picture goes with the next turn
                live.picture = image
                live.talk.image = self.state.files.claim(conversation.id, image)
        except InputError as refused:
            conversation.messages.append({"role": "assistant", "content": refused.apology()})
            return conversation.messages, conversation, skip
        trigger = skip
        if chunk is not None:
            sample_rate, samples = chunk
            for event in live.talk.listen(samples, sample_rate):
                if event.kind == "turn" and self._answer(conversation, live, event, client_address(request)):
                    live.replies += 1
                    trigger = f"{conversation.id}-{live.replies}"
        conversation.touch()
        return _or_skip(self._chat_if_changed(conversation, live)), conversation, trigger

    def play(self, conversation: Conversation | None) -> Iterator[tuple[Any, Any]]:
        """The reply being answered, as it comes: chat updates and audio pieces, until it ends."""
        live = conversation.live if conversation else None
        if live is None:
            return
        while True:
            worker_done = live.worker is None or not live.worker.is_alive()
            audio = np.concatenate(_drain(live.audio)) if live.audio else None
            chat = self._chat_if_changed(conversation, live)
            if audio is not None or chat is not None:
                yield _or_skip(chat), _or_skip(wav_bytes(audio, self._sample_rate()) if audio is not None else None)
            if worker_done and not live.audio:
                return
            time.sleep(PLAY_POLL_SECONDS)

    @staticmethod
    def _chat_if_changed(conversation: Conversation, live: Live) -> list[dict] | None:
        now = (len(conversation.messages), _last_content(conversation))
        changed, live.shown = now != live.shown, now
        return conversation.messages if changed else None

    def _start(self, conversation: Conversation) -> Live:
        conversation.live = Live(HandsFreeConversation(self.state.pipelines.default, conversation.session))
        return conversation.live

    def _sample_rate(self) -> int:
        return self.state.pipelines.default.speech_out.sample_rate

    def _answer(self, conversation: Conversation, live: Live, turn: TurnEvent, client: str | None) -> bool:
        """Start answering `turn` in a worker; False when refused (the chat says why)."""
        if live.worker is not None:
            live.worker.join(timeout=5)  # the reply it was speaking is being cut short: it ends at once
        try:
            self.state.rate_limiter.check(client)
        except InputError as refused:
            conversation.messages.append({"role": "assistant", "content": refused.apology()})
            return False
        question = {"role": "user", "content": "🎤 …"}
        reply = {"role": "assistant", "content": ""}
        conversation.messages += [question, reply]
        live.worker = threading.Thread(target=self._speak_reply, args=(conversation, live, turn, question, reply),
                                       daemon=True, name=f"hands-free-{conversation.id[:8]}")
        live.worker.start()
        return True

    def _speak_reply(self, conversation: Conversation, live: Live, turn: TurnEvent, question: dict,
                     reply: dict) -> None:
        image = live.talk.image
        for event in live.talk.respond(turn):
            if event.kind == "transcript":
                question["content"] = f"🎤 {event.text}"
            elif event.kind == "text":
                reply["content"] += event.text
            elif event.kind == "audio":
                live.audio.append(event.audio)
            elif event.reply is not None:  # done or error
                reply["content"] = event.reply.text
                if event.kind == "done" and event.reply.transcript:  # the question, as heard
                    conversation.exchanges.append(Exchange(event.reply.transcript, image, None, None,
                                                           event.reply.text, conversation.position(reply)))
        if live.talk.session.history and live.talk.session.history[-1].interrupted:
            reply["content"] = live.talk.session.history[-1].text + INTERRUPTED_MARK
        conversation.turns += 1
        conversation.touch()


def _or_skip(value: Any) -> Any:
    return gr.skip() if value is None else value


def _drain(queue: deque) -> list:
    items = []
    while queue:
        items.append(queue.popleft())
    return items


def _last_content(conversation: Conversation) -> object:
    return conversation.messages[-1]["content"] if conversation.messages else None
