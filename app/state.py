"""What the app holds besides the page: open conversations, the pipeline in each setting, its files.

Every conversation has its own pipeline `Session`; conversations share the model and nothing else.
Browser tabs and API clients are kept apart (two registries), so an API id can never reach a tab's chat.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.feedback import Exchange, FeedbackStore
from app.files import AppFiles
from app.rate_limit import RateLimiter
from mmdialog.errors import ConfigError
from mmdialog.pipeline import DialoguePipeline
from mmdialog.session import Session
from mmdialog.settings import AppSettings, SpeechMode

if TYPE_CHECKING:
    from app.live import Live


@dataclass
class Conversation:
    session: Session
    # Long and random: an API client's only proof that a conversation is its own.
    id: str = field(default_factory=lambda: secrets.token_hex(16))
    messages: list[dict] = field(default_factory=list)  # the chat view: Gradio message dicts
    last_active: float = field(default_factory=time.monotonic)
    turns: int = 0
    live: Live | None = None  # hands-free listening (app/live.py), made when the microphone first streams
    exchanges: list[Exchange] = field(default_factory=list)  # the answered turns, for feedback
    feedback_opt_out: bool = False

    def touch(self) -> None:
        self.last_active = time.monotonic()

    def position(self, message: dict) -> int:
        """Where this very message is in the chat (several may read the same, such as two "yes")."""
        return next(i for i, m in enumerate(self.messages) if m is message)

    @property
    def busy(self) -> bool:
        return self.session.lock.locked()


class Conversations:
    """The open conversations of one kind, to find by id, count, reset and clean up."""

    def __init__(self, pipeline: DialoguePipeline, files: AppFiles, greeting: list[dict]):
        self._pipeline = pipeline
        self._files = files
        self._greeting = greeting
        self._open: dict[str, Conversation] = {}
        self._lock = threading.Lock()

    def greeting(self) -> list[dict]:
        """The chat a new conversation starts with (the kiosk's welcome, or nothing)."""
        return copy.deepcopy(self._greeting)

    def open(self) -> Conversation:
        conversation = Conversation(self._pipeline.new_session(), messages=self.greeting())
        with self._lock:
            self._open[conversation.id] = conversation
        return conversation

    def get(self, conversation_id: str) -> Conversation | None:
        with self._lock:
            return self._open.get(conversation_id)

    def reset(self, conversation: Conversation) -> None:
        """Forget the dialogue and delete its files; the conversation (and its id) goes on. A turn still
        running finishes first (it would write its question and answer into the history after the reset)."""
        if conversation.live is not None:
            conversation.live.stop()  # a hands-free reply stops talking, so the turn finishes at once
        with conversation.session.lock:
            conversation.session.reset()
        conversation.messages = self.greeting()
        conversation.exchanges = []
        conversation.turns = 0
        self._files.release(conversation.id)
        conversation.touch()

    def close(self, conversation: Conversation | None) -> None:
        if conversation is None:
            return
        with self._lock:
            self._open.pop(conversation.id, None)
        if conversation.live is not None:
            conversation.live.stop()
        self._files.release(conversation.id)

    def expire(self, idle_seconds: float) -> None:
        """Close conversations nobody has used for `idle_seconds` (clients that never said goodbye)."""
        now = time.monotonic()
        with self._lock:
            stale = [c for c in self._open.values() if not c.busy and now - c.last_active > idle_seconds]
        for conversation in stale:
            self.close(conversation)

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[Conversation]:
        with self._lock:
            return iter(list(self._open.values()))


class Pipelines:
    """The pipeline as each turn's settings want it: a speech mode, with or without the voice.

    The pipeline reads the speech mode from its model's config, which all conversations share; each
    variant gets a shallow copy of the model (same weights, same modules) with its own config instead,
    so one tab choosing `transcript` never changes what another tab's turn does.
    """

    def __init__(self, pipeline: DialoguePipeline):
        self.default = pipeline
        self._variants: dict[tuple[SpeechMode, bool], DialoguePipeline] = {}
        self._lock = threading.Lock()

    @property
    def default_mode(self) -> SpeechMode:
        return self.default.model.config.speech.mode

    def choose(self, mode: SpeechMode | str | None = None, voice: bool = True) -> DialoguePipeline:
        mode = SpeechMode(mode) if mode else self.default_mode
        speech_out = self.default.speech_out if voice else None
        if mode == self.default_mode and speech_out is self.default.speech_out:
            return self.default
        with self._lock:
            key = (mode, speech_out is not None)
            if key not in self._variants:
                model = copy.copy(self.default.model)  # shares every parameter and submodule
                config = model.config
                model.config = dataclasses.replace(config, speech=dataclasses.replace(config.speech, mode=mode))
                self._variants[key] = DialoguePipeline(model, speech_out, self.default.config)
            return self._variants[key]


@dataclass
class AppState:
    """Everything the event handlers and the health route share, made once per app."""

    pipelines: Pipelines
    settings: AppSettings
    kiosk: bool
    files: AppFiles
    browser: Conversations
    api: Conversations
    rate_limiter: RateLimiter
    feedback: FeedbackStore | None = None  # None: feedback is off
    started: float = field(default_factory=time.time)

    @classmethod
    def create(cls, pipeline: DialoguePipeline, settings: AppSettings, kiosk: bool) -> AppState:
        files = AppFiles(settings.upload_dir)
        # Gradio reads this when it makes components and when it launches: uploads land in our folder.
        # It is process-wide, so one process serves one app at a time.
        os.environ["GRADIO_TEMP_DIR"] = str(files.root)
        greeting = [{"role": "assistant", "content": settings.welcome}] if kiosk and settings.welcome else []
        if settings.feedback and not settings.feedback_dir:
            raise ConfigError("app.feedback needs app.feedback_dir: the folder where ratings and suggestions are kept")
        feedback = FeedbackStore(settings.feedback_dir) if settings.feedback else None
        return cls(Pipelines(pipeline), settings, kiosk, files, Conversations(pipeline, files, greeting),
                   Conversations(pipeline, files, []), RateLimiter(settings.rate_limit_per_minute), feedback)

    @property
    def model_name(self) -> str:
        config = self.pipelines.default.config
        return config.checkpoint or config.name

    def health(self) -> dict:
        return {"status": "ok", "model": self.model_name, "kiosk": self.kiosk,
                "uptime_s": round(time.time() - self.started, 1),
                "sessions": {"browser": len(self.browser), "api": len(self.api)},
                "busy": sum(c.busy for c in [*self.browser, *self.api])}
