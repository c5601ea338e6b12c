"""Dialogues to training examples: one per assistant turn, its earlier turns as context; preference pairs to
(chosen, rejected) examples that share one context."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import Dataset

from mmdialog.data.format import DialogueRecord, PreferenceRecord, TurnRecord
from mmdialog.dialogue import Media, ModelInput, Turn, build_model_input, with_markers
from mmdialog.media import MediaPreparer
from mmdialog.settings import Freeze, SpeechMode


def encoder_length(item: ModelInput, model) -> int:
    """How many embeddings `item` gives the encoder: its tokens, with each marker replaced by its soft tokens."""
    return len(item.input_ids) - len(item.media) + sum(model.soft_token_count(m) for m in item.media)


class DialogueDataset(Dataset):
    """Item i is the ModelInput for the i-th assistant turn (labels = that turn's text)."""

    def __init__(self, dialogues: Sequence[DialogueRecord], model, cache_media: bool = True,
                 speech_modes: Sequence[SpeechMode] = ()):
        self.dialogues = list(dialogues)
        # Training with several speech modes: each example gets one, fixed by its index (reproducible).
        self.speech_modes = list(speech_modes)
        self.model = model
        self.prepare = MediaPreparer(model)
        self.examples = self._examples()
        # A media file is preprocessed once even when many examples of a dialogue reuse it. Only safe
        # while the encoders it feeds are frozen (features are cached with the audio); the preprocessed
        # pixels and mels themselves never change.
        self._cache: dict[str, Media] | None = {} if cache_media else None
        # Built inputs, by index: an example's input depends on its index alone (speech mode included), and a
        # run draws each example several times. Kept only while media are cached, for the same reason.
        self._built: dict[int, ModelInput] = {}

    def _examples(self) -> list[tuple[int, int]]:
        """(dialogue, position of the target): the context is every turn before that position."""
        return [(d, i) for d, dialogue in enumerate(self.dialogues)
                for i, turn in enumerate(dialogue.turns) if turn.role == "assistant" and i > 0]

    def __len__(self) -> int:
        return len(self.examples)

    def media(self, kind: str, path, transcript: str | None = None) -> Media:
        """One image or clip, preprocessed (and cached, see __init__)."""
        key = f"{kind}:{path}"
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        media = self.prepare.image(path) if kind == "image" else self.prepare.audio(path, transcript)
        if self._cache is not None:
            self._cache[key] = media
        return media

    @torch.no_grad()
    def cache_image_features(self, batch_size: int = 128) -> int:
        """Run the vision tower once over every image of the dialogues and keep its features, so that training
        steps skip it. Only for a frozen tower, and only once its weights are final (after vision pretraining
        or a resume). Returns how many images it encoded."""
        if self._cache is None or self.model.config.vision.freeze != Freeze.frozen:
            return 0
        paths = sorted({p for d in self.dialogues for t in d.turns for p in t.images}, key=str)
        vision, was_training = self.model.vision, self.model.vision.training
        vision.eval()
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            pixels = torch.stack([self.media("image", p).pixel_values for p in chunk]).to(self.model.device)
            for path, features in zip(chunk, vision(pixels).cpu(), strict=True):
                self._cache[f"image:{path}"] = Media("image", features=features)
        vision.train(was_training)
        self._built.clear()
        return len(paths)

    def _turn(self, record: TurnRecord) -> Turn:
        media = [self.media("image", p) for p in record.images]
        media += [self.media("audio", a.path, a.transcript) for a in record.audio]
        return Turn(record.role, with_markers(record.text, media), media)  # type: ignore[arg-type]

    def modalities(self, index: int) -> str:
        """Which media the example's context holds: 'text', 'image', 'audio' or 'image+audio'."""
        dialogue, target = self.examples[index]
        kinds = {k for t in self.dialogues[dialogue].turns[:target] for k, items in
                 (("image", t.images), ("audio", t.audio)) if items}
        return "+".join(sorted(kinds)) or "text"

    def speech_mode(self, index: int) -> SpeechMode:
        """The speech mode example `index` is built with."""
        return self.speech_modes[index % len(self.speech_modes)] if self.speech_modes else self.model.config.speech.mode

    def audio_refs(self) -> list[tuple[Path, str | None]]:
        """Every distinct clip the dialogues hold, as (path, transcript), in a fixed order."""
        refs = {(a.path, a.transcript) for d in self.dialogues for t in d.turns for a in t.audio}
        return sorted(refs, key=lambda ref: (str(ref[0]), ref[1] or ""))

    def meta(self, index: int) -> dict:
        return self.dialogues[self.examples[index][0]].meta

    def target_text(self, index: int) -> str:
        dialogue, target = self.examples[index]
        return self.dialogues[dialogue].turns[target].text

    def _input(self, index: int, target: str) -> ModelInput:
        """The example's context with `target` as the reply to learn."""
        dialogue, end = self.examples[index]
        history = [self._turn(t) for t in self.dialogues[dialogue].turns[:end]]
        return build_model_input(history, self.model.tokenizer, self.model.config.dialogue, self.speech_mode(index),
                                 self.model.soft_token_count, target=target, text_mode=self.model.text_mode)

    def __getitem__(self, index: int) -> ModelInput:
        built = self._built.get(index)
        if built is None:
            built = self._input(index, self.target_text(index))
            if self._cache is not None:
                self._built[index] = built
        return built

    def input_length(self, index: int) -> int:
        """Example `index`'s encoder_length."""
        return encoder_length(self[index], self.model)


class PreferencePair(NamedTuple):
    chosen: ModelInput
    rejected: ModelInput


class PreferenceDataset(DialogueDataset):
    """Item i is the i-th pair's context twice: with the chosen reply as labels, and with the rejected one
    (same speech mode, same media objects)."""

    dialogues: list[PreferenceRecord]

    def _examples(self) -> list[tuple[int, int]]:
        return [(d, len(dialogue.turns)) for d, dialogue in enumerate(self.dialogues)]

    def target_text(self, index: int) -> str:
        return self.dialogues[self.examples[index][0]].chosen

    def __getitem__(self, index: int) -> PreferencePair:  # type: ignore[override]
        record = self.dialogues[self.examples[index][0]]
        return PreferencePair(self._input(index, record.chosen), self._input(index, record.rejected))

    def input_length(self, index: int) -> int:
        """The shared context's length (see DialogueDataset.input_length): one input built, not the pair."""
        return encoder_length(self._input(index, self.target_text(index)), self.model)


def collate(items: list) -> list:
    """The model takes a list of ModelInputs (or pairs of them): padding happens inside it, after soft tokens
    are spliced in."""
    return items
