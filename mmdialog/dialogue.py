"""One dialogue format for training and serving: a history of turns becomes the model's input here only.

A turn's text holds `<image>` / `<audio>` markers where its media go. Speech mode decides what an audio
marker becomes: the Whisper transcript as text (`transcript`), soft tokens (`features`), or both. With a text
encoder, text mode decides what a person's words (typed, or a transcript) become: word pieces (`tokens`), a
`<text>` marker for the text encoder's soft tokens (`features`), or both. The input budget counts soft tokens
too, and drops the oldest turns first; `dialogue.context_from_latest_image` drops every turn before the
latest picture.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from decoders.seq2seq import AUDIO_TOKEN, IMAGE_TOKEN, TEXT_TOKEN
from mmdialog.errors import InputError
from mmdialog.settings import DialogueSettings, SpeechMode, TextMode

MARKER = re.compile(f"({re.escape(IMAGE_TOKEN)}|{re.escape(AUDIO_TOKEN)}|{re.escape(TEXT_TOKEN)})")
KIND_OF_MARKER = {IMAGE_TOKEN: "image", AUDIO_TOKEN: "audio", TEXT_TOKEN: "text"}


@dataclass
class Media:
    """An image, an audio clip or a person's words in model-ready form: raw (pixels / mel / text) and, once
    computed, encoder features."""

    kind: Literal["image", "audio", "text"]
    pixel_values: torch.Tensor | None = None  # (3, H, W)
    mel: torch.Tensor | None = None  # (n_mels, T)
    features: torch.Tensor | None = None  # encoder output (N, d), cached after the first encode
    transcript: str | None = None  # audio: what Whisper heard; text: the words themselves


@dataclass
class Turn:
    role: Literal["user", "assistant"]
    text: str
    media: list[Media] = field(default_factory=list)
    interrupted: bool = False  # an assistant reply the person spoke over: `text` is what they heard


@dataclass
class ModelInput:
    """Token ids with one marker id per soft-token span, the media for those markers, and the labels."""

    input_ids: list[int]
    media: list[Media]
    labels: list[int] | None = None
    dropped_turns: int = 0


def with_markers(text: str, media: Sequence[Media]) -> str:
    """Put a marker in front of the text for every media item the text does not mention yet."""
    present = {kind: 0 for kind in ("image", "audio", "text")}
    for marker in MARKER.findall(text):
        present[KIND_OF_MARKER[marker]] += 1
    missing = []
    for kind, token in (("image", IMAGE_TOKEN), ("audio", AUDIO_TOKEN)):
        count = sum(1 for m in media if m.kind == kind) - present[kind]
        missing.extend([token] * max(count, 0))
    return " ".join([*missing, text]).strip() if missing else text


def _words(text: str, mode: TextMode | None) -> tuple[list[str], list[Media]]:
    """A person's words as pieces of the rendered turn, and the text media they became (text mode)."""
    if mode is None or mode == TextMode.tokens or not text.strip():
        return [text], []
    item = Media("text", transcript=text.strip())
    return ([TEXT_TOKEN, text] if mode == TextMode.both else [TEXT_TOKEN]), [item]


def _render(turn: Turn, prefix: str, mode: SpeechMode, text_mode: TextMode | None) -> tuple[str, list[Media]]:
    """The turn as text for the tokenizer, and the media whose markers remain in it, in order."""
    queues = {kind: [m for m in turn.media if m.kind == kind] for kind in ("image", "audio", "text")}
    words_mode = text_mode if turn.role == "user" else None  # replies stay the decoder's own word pieces
    pieces, kept = [prefix], []
    for piece in MARKER.split(turn.text):
        if piece not in KIND_OF_MARKER:
            words, media = _words(piece, words_mode)
            pieces.extend(words)
            kept.extend(media)
            continue
        kind = KIND_OF_MARKER[piece]
        if not queues[kind]:
            raise InputError(f"the text has more {piece} markers than {kind} items")
        item = queues[kind].pop(0)
        if kind == "audio" and mode != SpeechMode.features:
            if mode == SpeechMode.both:
                pieces.append(piece)
                kept.append(item)
            words, media = _words((item.transcript or "").strip(), words_mode)
            pieces.extend(words)
            kept.extend(media)
            continue
        pieces.append(piece)
        kept.append(item)
    if any(queues.values()):
        raise InputError("a turn has media without a matching <image> / <audio> marker in its text")
    return re.sub(r"\s+", " ", " ".join(p.strip() for p in pieces if p.strip())), kept


def build_model_input(
    history: Sequence[Turn],
    tokenizer,
    settings: DialogueSettings,
    speech_mode: SpeechMode,
    soft_tokens: Callable[[Media], int],
    target: str | None = None,
    text_mode: TextMode | None = None,
) -> ModelInput:
    """Encode `history` (oldest first) for the decoder, within `settings.max_input_tokens` soft tokens included.

    `soft_tokens(media)` says how many embeddings a media item becomes; `target` (the assistant reply to
    learn) becomes the labels, ending with EOS. `text_mode`: None when the model has no text encoder.
    """
    if not history:
        raise InputError("a dialogue needs at least one turn")
    marker_ids = {tokenizer.convert_tokens_to_ids(token) for token in (IMAGE_TOKEN, AUDIO_TOKEN, TEXT_TOKEN)}
    encoded: list[tuple[list[int], list[Media], int]] = []
    for turn in history:
        prefix = settings.user_prefix if turn.role == "user" else settings.assistant_prefix
        text, media = _render(turn, prefix, speech_mode, text_mode)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        cost = len(ids) - len(media) + sum(soft_tokens(m) for m in media)
        encoded.append((ids, media, cost))

    dropped = 0
    if settings.context_from_latest_image:
        pictured = [i for i, turn in enumerate(history)
                    if turn.role == "user" and any(m.kind == "image" for m in turn.media)]
        if pictured:
            dropped = pictured[-1]
            encoded = encoded[dropped:]
    budget = settings.max_input_tokens - 1  # room for EOS
    while len(encoded) > 1 and sum(cost for _, _, cost in encoded) > budget:
        encoded.pop(0)
        dropped += 1
    ids, media, cost = encoded[0]
    if len(encoded) == 1 and cost > budget:
        # A single turn longer than the budget: keep its media and its newest words.
        overflow = cost - budget
        kept_ids = []
        for token in ids:
            if overflow > 0 and token not in marker_ids:
                overflow -= 1
                continue
            kept_ids.append(token)
        encoded[0] = (kept_ids, media, budget)

    input_ids = [token for ids, _, _ in encoded for token in ids] + [tokenizer.eos_token_id]
    all_media = [item for _, media, _ in encoded for item in media]
    labels = None
    if target is not None:
        target_ids = tokenizer(target, add_special_tokens=False)["input_ids"][: settings.max_target_tokens - 1]
        labels = target_ids + [tokenizer.eos_token_id]
    return ModelInput(input_ids=input_ids, media=all_media, labels=labels, dropped_turns=dropped)
