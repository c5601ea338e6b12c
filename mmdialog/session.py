"""A conversation's state (history with its media, cached features) and what a turn returns."""

from __future__ import annotations

import hashlib
import threading
import uuid
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from mmdialog.dialogue import Turn


@dataclass
class Session:
    """One person's conversation. Sessions share the model and nothing else."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    history: list[Turn] = field(default_factory=list)
    # Encoder features of every image seen in this session, by content hash: an image shown again
    # (or discussed over several turns) never goes through the vision tower twice.
    image_features: dict[str, torch.Tensor] = field(default_factory=dict)
    media_count: int = 0
    turns: int = 0  # turns asked for, answered or not (the turn log numbers them)
    # One turn at a time per session; different sessions run in parallel.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reset(self) -> None:
        self.history.clear()
        self.image_features.clear()
        self.media_count = 0


def content_key(data: bytes | np.ndarray) -> str:
    raw = data.tobytes() if isinstance(data, np.ndarray) else data
    return hashlib.sha256(raw).hexdigest()


@dataclass
class Reply:
    text: str
    transcript: str | None = None
    audio: np.ndarray | None = None  # float32 mono at `sample_rate`; None when the voice is off
    sample_rate: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # set when the turn could not be answered; the session goes on
    interrupted: bool = False


@dataclass
class Event:
    """What `DialoguePipeline.stream` yields, in order: transcript, text deltas and audio chunks
    (interleaved: audio of a sentence as soon as it is written), then done (or error)."""

    kind: Literal["transcript", "text", "audio", "done", "error"]
    text: str | None = None
    audio: np.ndarray | None = None
    reply: Reply | None = None
