"""A small byte-level BPE tokenizer trained on a dialogue corpus, for decoders built from a config.

Hub decoders bring their tokenizer; a decoder trained from scratch on a small world (the demo) needs
one that fits its vocabulary: short sequences make it fast, and byte-level BPE still spells out any
word it never saw. It is saved with the model, so the checkpoint is self-contained.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from decoders.seq2seq import MEDIA_TOKENS
from mmdialog.data.format import load_dialogues

SPECIALS = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}


def dialogue_texts(paths: Iterable[str | Path]) -> Iterator[str]:
    """Every turn's text and every cached transcript of the given JSONL files."""
    for path in paths:
        dialogues, _ = load_dialogues(path, skip_bad=True, check_media=False)
        for dialogue in dialogues:
            for turn in dialogue.turns:
                yield turn.text
                yield from (a.transcript for a in turn.audio if a.transcript)


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    model = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    model.decoder = decoders.ByteLevel()
    model.post_processor = processors.ByteLevel(trim_offsets=True)
    specials = [SPECIALS["pad_token"], SPECIALS["eos_token"], SPECIALS["unk_token"], *MEDIA_TOKENS]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    model.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=model, **SPECIALS)
    tokenizer.add_special_tokens({"additional_special_tokens": list(MEDIA_TOKENS)},
                                 replace_extra_special_tokens=False)
    return tokenizer


def tokenizer_for_training(spec: str, data_files: Iterable[str | Path]) -> PreTrainedTokenizerFast:
    """`spec` is "bpe:<vocab size>", e.g. "bpe:1000": train one on the training data."""
    kind, _, size = spec.partition(":")
    if kind != "bpe" or not size.isdigit():
        raise ValueError(f"tokenizer spec '{spec}' must look like bpe:1000")
    return train_bpe_tokenizer(dialogue_texts(data_files), int(size))
