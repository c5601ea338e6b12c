"""Noise on the dialogue context, for training only: word pieces (train.token_noise), a text encoder's
word-piece states (train.sentence_only) and clips paired with another clip's transcript (train.audio_swap).

A model trained from scratch has never seen most words: a question worded in a way training never used
("count the stars in the picture" for "how many stars are there?") brings word pieces whose embeddings are
still random. Training on contexts where a few pieces are swapped for random ones, dropped, or joined by a
random one teaches the model to answer from the words it knows and to let the others pass. Media markers,
the turn prefixes and end-of-sequence are never touched, so the dialogue's shape stays intact.
"""

from __future__ import annotations

import dataclasses

import torch
from torch.utils.data import Dataset

from mmdialog.data.dataset import DialogueDataset
from mmdialog.dialogue import ModelInput
from mmdialog.settings import DialogueSettings, SpeechMode

REPLACE, DROP, INSERT = 0, 1, 2


class ContextNoise(Dataset):
    """Wraps a dataset of ModelInputs and changes each at random, as a function of (seed, epoch, index) alone:
    the data loader fetches a batch ahead of the step being trained, so noise drawn from a running generator
    would differ between a resumed run and an uninterrupted one. The trainer calls set_epoch at the start of
    every epoch."""

    def __init__(self, base: Dataset, rate: float, seed: int = 0):
        self.base = base
        self.rate = rate
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator(self, index: int) -> torch.Generator:
        """The random numbers of example `index` in this epoch: the same whenever it is fetched."""
        return torch.Generator().manual_seed(((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index) % 2**63)


class TokenNoise(ContextNoise):
    """Each context piece is changed with probability `rate` (one of the three changes, equally likely)."""

    def __init__(self, base: Dataset, tokenizer, dialogue: DialogueSettings, rate: float, seed: int = 0):
        super().__init__(base, rate, seed)
        protected = set(tokenizer.all_special_ids)
        for prefix in (dialogue.user_prefix, dialogue.assistant_prefix):
            protected.update(tokenizer(prefix, add_special_tokens=False)["input_ids"])
        self.protected = protected
        self.vocabulary = torch.tensor([i for i in range(len(tokenizer)) if i not in protected])

    def __getitem__(self, index: int) -> ModelInput:
        item = self.base[index]
        return dataclasses.replace(item, input_ids=self.noisy(item.input_ids, self.generator(index)))

    def noisy(self, ids: list[int], generator: torch.Generator) -> list[int]:
        count = len(ids)
        changed = (torch.rand(count, generator=generator) < self.rate).tolist()
        kinds = torch.randint(0, 3, (count,), generator=generator).tolist()
        others = self.vocabulary[torch.randint(0, len(self.vocabulary), (count,), generator=generator)].tolist()
        out: list[int] = []
        for token, change, kind, other in zip(ids, changed, kinds, others, strict=True):
            if not change or token in self.protected:
                out.append(token)
            elif kind == REPLACE:
                out.append(other)
            elif kind == INSERT:
                out.extend((token, other))
            # DROP: nothing
        return out


class SentenceOnly(ContextNoise):
    """Each text item (a person's words for the text encoder) becomes, with probability `rate`, the sentence
    embedding alone, without the states of its word pieces.

    Word-piece states let the decoder learn what is asked from a few familiar pieces ("what is in the
    middle?"), which a new wording can share while asking something else ("tell me what is in the picture").
    The sentence embedding is what the encoder was trained to make alike for sentences that mean the same;
    without the pieces, the decoder has to learn to read it.
    """

    def __init__(self, base: Dataset, text_encoder, rate: float, seed: int = 0):
        super().__init__(base, rate, seed)
        self.text_encoder = text_encoder

    def __getitem__(self, index: int) -> ModelInput:
        item = self.base[index]
        texts = [i for i, m in enumerate(item.media) if m.kind == "text"]
        if not texts:
            return item
        chosen = torch.rand(len(texts), generator=self.generator(index)) < self.rate
        media = list(item.media)
        for i, cut in zip(texts, chosen.tolist(), strict=True):
            if cut:
                sentence = self.text_encoder.encode([media[i].transcript or ""])[0][:1]
                media[i] = dataclasses.replace(media[i], features=sentence)
        return dataclasses.replace(item, media=media)


class AudioSwap(ContextNoise):
    """In examples built in speech mode `both`, each clip's soft tokens come, with probability `rate`, from
    another clip of the data, while the transcript stays the one of what was said.

    Training clips are a finite set, each heard in many dialogues: the decoder learns to tell what was asked
    from the clip alone, trusts it over the transcript (which Whisper gets wrong now and then), and then
    answers a clip worded in a way it never heard as if it were a familiar one, even when the transcript is
    right. With some clips not matching their transcript, it learns to check one against the other.
    """

    def __init__(self, base: DialogueDataset, rate: float, seed: int = 0):
        super().__init__(base, rate, seed)
        self.refs = base.audio_refs()

    def __getitem__(self, index: int) -> ModelInput:
        base: DialogueDataset = self.base  # type: ignore[assignment]
        item = base[index]
        clips = [i for i, m in enumerate(item.media) if m.kind == "audio"]
        if not clips or len(self.refs) < 2 or base.speech_mode(index) != SpeechMode.both:
            return item
        generator = self.generator(index)
        swapped = (torch.rand(len(clips), generator=generator) < self.rate).tolist()
        others = torch.randint(0, len(self.refs), (len(clips),), generator=generator).tolist()
        media = list(item.media)
        for i, swap, other in zip(clips, swapped, others, strict=True):
            if swap:
                media[i] = base.media("audio", *self.refs[other])
        return dataclasses.replace(item, media=media)
