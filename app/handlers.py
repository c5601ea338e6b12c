"""What the page's events do: a turn streamed into the chat and the speaker, a new conversation, the
kiosk's idle reset. Layout-free: every handler returns the values of `ChatOutputs`, in that order."""

from __future__ import annotations

import io
import math
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr
import numpy as np
import soundfile as sf

from app.feedback import Exchange
from app.rate_limit import client_address
from app.state import AppState, Conversation
from mmdialog.errors import InputError

# The outputs every handler here fills: chat, conversation, spoken reply, latency, then the three inputs
# (text, picture, recording), which are emptied once a turn has taken them.
ChatOutputs = tuple[Any, Any, Any, Any, Any, Any, Any]

# Stage timings shown under the chat, in the order a turn goes through them.
STAGES = (("audio_decode", "decode"), ("asr", "asr"), ("vision_encode", "vision"), ("fusion", "fusion"),
          ("first_token", "first token"), ("generation", "generation"), ("first_audio_chunk", "first sound"),
          ("tts_total", "voice"))


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """One sentence of the spoken reply as a WAV file in memory: a streamed chunk leaves no file behind."""
    buffer = io.BytesIO()
    sf.write(buffer, audio, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def latency_text(timings: dict[str, float]) -> str:
    head = [f"**first audio {timings['ttfa']:.0f} ms**"] if "ttfa" in timings else []
    head += [f"total {timings['total']:.0f} ms"] if "total" in timings else []
    stages = [f"{label} {timings[key]:.0f}" for key, label in STAGES if key in timings]
    return " · ".join(head) + (f"  \nstages (ms): {' · '.join(stages)}" if stages else "")


def generation_options(temperature: float | None, max_new_tokens: float | None) -> dict[str, Any]:
    """The settings panel's choices as generation overrides; absent controls (kiosk) keep the config's."""
    options: dict[str, Any] = {}
    if max_new_tokens:
        options["max_new_tokens"] = int(max_new_tokens)
    if temperature is not None:
        options["do_sample"] = temperature > 0  # 0 on the slider means greedy decoding
        if temperature > 0:
            options["temperature"] = float(temperature)
    return options


class ChatHandlers:
    def __init__(self, state: AppState):
        self.state = state

    def turn(self, conversation: Conversation | None, text: str | None, image: str | None, audio: str | None,
             voice: bool = True, speech_mode: str | None = None, temperature: float | None = None,
             max_new_tokens: float | None = None, request: gr.Request | None = None) -> Iterator[ChatOutputs]:
        """One turn: the question goes into the chat at once, the reply streams in word by word, and each
        finished sentence is spoken while the next is written."""
        conversation = conversation or self.state.browser.open()
        files = self.state.files
        try:
            self.state.rate_limiter.check(client_address(request))
            image, audio = files.claim(conversation.id, image), files.claim(conversation.id, audio)
        except InputError as refused:
            conversation.messages.append({"role": "assistant", "content": refused.apology()})
            yield conversation.messages, conversation, gr.skip(), "", "", None, None
            return
        text = (text or "").strip()
        question: list = [{"path": path} for path in (image, audio) if path] + ([text] if text else [])
        reply = {"role": "assistant", "content": ""}
        conversation.messages += ([{"role": "user", "content": question}] if question else []) + [reply]
        conversation.touch()
        skip = gr.skip()
        yield conversation.messages, conversation, skip, "", "", None, None

        pipeline = self.state.pipelines.choose(speech_mode, voice)
        events = pipeline.stream(conversation.session, text=text or None, image=image, audio=audio,
                                 **generation_options(temperature, max_new_tokens))
        for event in events:
            spoken, latency = skip, skip
            if event.kind == "transcript":
                question.append(f"(heard: {event.text})")
            elif event.kind == "text":
                reply["content"] += event.text
            elif event.kind == "audio":
                spoken = wav_bytes(event.audio, pipeline.speech_out.sample_rate)
            else:  # done or error: the final text (for an error, the friendly message) and the timings
                reply["content"] = event.reply.text
                latency = latency_text(event.reply.timings_ms)
                if event.kind == "done":
                    conversation.exchanges.append(Exchange(text, image, audio, event.reply.transcript,
                                                           event.reply.text, conversation.position(reply)))
            yield conversation.messages, conversation, spoken, latency, skip, skip, skip
        conversation.turns += 1
        conversation.touch()

    def new_conversation(self, conversation: Conversation | None) -> ChatOutputs:
        if conversation is not None:
            self.state.browser.reset(conversation)
        messages = conversation.messages if conversation else self.state.browser.greeting()
        return messages, conversation, None, "", "", None, None

    def idle_tick(self, conversation: Conversation | None, browser_idle_seconds: float | None,
                  text: str | None, image: str | None, audio: str | None) -> ChatOutputs:
        """Kiosk: after `kiosk_idle_seconds` without a touch, a key or a turn, start over for the next
        visitor and delete what this one left (sent or only uploaded)."""
        since_turn = time.monotonic() - conversation.last_active if conversation else math.inf
        idle = min(browser_idle_seconds if browser_idle_seconds is not None else math.inf, since_turn)
        something_to_clear = bool(conversation and conversation.turns) or bool(text or image or audio)
        busy = conversation is not None and conversation.busy
        if idle < self.state.settings.kiosk_idle_seconds or busy or not something_to_clear:
            return (gr.skip(),) * 7
        self.state.files.discard(image)
        self.state.files.discard(audio)
        return self.new_conversation(conversation)
