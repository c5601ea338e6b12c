"""A transformers encoder-decoder (T5, FLAN-T5, BART) that reads text and soft tokens via `inputs_embeds`.

Soft tokens go in through `inputs_embeds`, so any encoder-decoder works unchanged and `generate()` keeps
greedy, beam search, sampling and streaming. The markers `<image>` / `<audio>` are single tokenizer tokens
that only mark *where* soft tokens go; they are never embedded, so the vocabulary needs no resizing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer, ByT5Tokenizer, TextIteratorStreamer

from encoders.hub import load_or_explain
from mmdialog.errors import ModelNotAvailableError
from mmdialog.settings import DecoderSettings

IMAGE_TOKEN = "<image>"
AUDIO_TOKEN = "<audio>"
TEXT_TOKEN = "<text>"  # where a text encoder's features of a person's words go (mmdialog/dialogue.py)
MEDIA_TOKENS = (IMAGE_TOKEN, AUDIO_TOKEN, TEXT_TOKEN)


def load_tokenizer(settings: DecoderSettings):
    """The decoder's tokenizer with the media markers registered as unsplittable special tokens."""
    source = settings.tokenizer or settings.name
    if source == "byt5" or (not source and not settings.name):
        tokenizer = ByT5Tokenizer()
    elif source.startswith("bpe:"):
        raise ModelNotAvailableError([f"tokenizer '{source}' is trained by `mmdialog train` on its data; "
                                      "to load a model, give the tokenizer folder saved with it"])
    else:
        tokenizer = load_or_explain("tokenizer", source, AutoTokenizer.from_pretrained)
    missing = [t for t in MEDIA_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    return tokenizer


class Seq2SeqDecoder(nn.Module):
    """The language model of the system: takes embeddings, returns a loss or generated text."""

    def __init__(self, model: nn.Module, tokenizer, settings: DecoderSettings):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        self.hidden_size: int = model.config.d_model
        self.image_token_id: int = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.audio_token_id: int = tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)
        self.text_token_id: int = tokenizer.convert_tokens_to_ids(TEXT_TOKEN)
        if settings.gradient_checkpointing:
            model.gradient_checkpointing_enable()

    @classmethod
    def from_settings(cls, settings: DecoderSettings) -> Seq2SeqDecoder:
        tokenizer = load_tokenizer(settings)
        if settings.name:
            model = load_or_explain("decoder", settings.name, AutoModelForSeq2SeqLM.from_pretrained)
        else:
            options = dict(settings.config)
            options.setdefault("vocab_size", len(tokenizer))
            options.setdefault("pad_token_id", tokenizer.pad_token_id)
            options.setdefault("eos_token_id", tokenizer.eos_token_id)
            options.setdefault("decoder_start_token_id", tokenizer.pad_token_id)
            model = AutoModelForSeq2SeqLM.from_config(AutoConfig.for_model(**options))
        return cls(model, tokenizer, settings)

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings as the encoder would compute them (BART scales them inside its embedding)."""
        return self.model.get_encoder().embed_tokens(input_ids)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None) -> Any:
        return self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels)

    def _generation_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        kwargs = {"pad_token_id": self.tokenizer.pad_token_id, "eos_token_id": self.tokenizer.eos_token_id}
        kwargs.update({k: v for k, v in options.items() if v is not None})
        if not kwargs.get("do_sample"):
            # Greedy / beam: sampling knobs would only trigger warnings.
            kwargs.pop("temperature", None)
            kwargs.pop("top_p", None)
        return kwargs

    @torch.inference_mode()
    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, **options: Any) -> list[str]:
        output = self.model.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                     **self._generation_kwargs(options))
        return [text.strip() for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)]

    def stream(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
               context: Callable[[], AbstractContextManager] | None = None, **options: Any) -> Iterator[str]:
        """Yield text pieces as tokens are generated (one sequence; greedy or sampling).

        Generation runs in a worker thread; `context` (e.g. autocast, which is per thread) is entered there.
        """
        streamer = TextIteratorStreamer(self.tokenizer, skip_special_tokens=True, timeout=300)
        kwargs = self._generation_kwargs(options)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode(), (context() if context else nullcontext()):
                    self.model.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                        streamer=streamer, **kwargs)
            except BaseException as exc:  # re-raised in the caller's thread below
                errors.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        for piece in streamer:
            if piece:
                yield piece
        worker.join()
        if errors:
            raise errors[0]
