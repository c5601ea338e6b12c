"""The HTTP API for scripts (`gradio_client`): `/turn` and `/reset`.

Conversations are named by a `session_id` the server hands out: leave it empty and every call is a fresh,
one-turn conversation (stateless use); pass back the id a turn returned to go on with that conversation.
Ids are 128 random bits and live in a registry of their own, so two clients share a conversation only if
one gives its id to the other. Conversations unused for `API_IDLE_SECONDS` are closed and their files deleted.
"""

from __future__ import annotations

import gradio as gr

from app.feedback import Exchange
from app.rate_limit import client_address
from app.state import AppState, Conversation
from mmdialog.errors import InputError

API_IDLE_SECONDS = 30 * 60


class DialogueAPI:
    def __init__(self, state: AppState):
        self.state = state

    def turn(self, text: str | None, image: dict | None, audio: dict | None, session_id: str | None,
             request: gr.Request | None = None) -> tuple[str, str, str | None, dict[str, float], str, str]:
        """One whole turn: reply text, transcript ("" when none), the spoken reply as a WAV file (None without a
        voice), stage timings in ms, the conversation's id, and the error ("" when answered; the reply then
        holds a friendly message).

        `image` and `audio` arrive as Gradio's file payloads, not preprocessed: gr.File's own preprocessing
        (Gradio 6.31) leaves an empty temp file behind for every upload. Unpreprocessed payloads are not checked
        by Gradio (a script can name any path or link); `AppFiles.claim` refuses all but this app's uploads."""
        conversation = self._conversation(session_id)
        files = self.state.files
        try:
            self.state.rate_limiter.check(client_address(request))
            image_path = files.claim(conversation.id, _payload_path(image)) if image else None
            audio_path = files.claim(conversation.id, _payload_path(audio)) if audio else None
        except InputError as refused:
            return refused.apology(), "", None, {}, conversation.id, str(refused)
        reply = self.state.pipelines.default.respond(conversation.session, text=text or None, image=image_path,
                                                     audio=audio_path)
        conversation.turns += 1
        conversation.touch()
        if not reply.error:
            conversation.exchanges.append(Exchange(text or "", image_path, audio_path, reply.transcript, reply.text))
        spoken = None
        if reply.audio is not None and len(reply.audio):
            spoken = str(files.write_wav(conversation.id, f"reply-{conversation.turns}", reply.audio,
                                         reply.sample_rate))
        return reply.text, reply.transcript or "", spoken, reply.timings_ms, conversation.id, reply.error or ""

    def reset(self, session_id: str | None) -> str:
        """Start the conversation over (its files are deleted); returns the id to use next."""
        conversation = self._conversation(session_id)
        self.state.api.reset(conversation)
        return conversation.id

    def _conversation(self, session_id: str | None) -> Conversation:
        """The conversation with this id, or a new one (no id, or one that expired: the returned id says)."""
        conversations = self.state.api
        conversations.expire(API_IDLE_SECONDS)
        return (conversations.get(session_id) if session_id else None) or conversations.open()


def _payload_path(payload: object) -> str:
    """The path in a Gradio file payload ({"path": ..., "meta": ...}); anything else is no upload."""
    path = payload.get("path") if isinstance(payload, dict) else None
    if not isinstance(path, str) or not path:
        raise InputError("a file must be sent as an upload (gradio_client's handle_file)")
    return path
