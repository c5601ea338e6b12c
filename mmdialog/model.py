"""MultimodalDialogueModel: speech and vision encoders, fusion projectors and a Seq2Seq decoder as one module."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from decoders.seq2seq import Seq2SeqDecoder
from encoders.speech import SpeechEncoder
from encoders.text import TextEncoder
from encoders.vision import VisionEncoder
from mmdialog.dialogue import Media, ModelInput
from mmdialog.errors import ModelNotAvailableError
from mmdialog.freezing import apply_freeze_policy
from mmdialog.fusion import Fusion
from mmdialog.settings import Freeze, FusionLayout, MmdialogConfig, ProjectorKind, TextMode

COMPONENTS = ("speech", "vision", "decoder")


class Components(NamedTuple):
    """What a model is built from."""

    speech: SpeechEncoder
    vision: VisionEncoder
    decoder: Seq2SeqDecoder
    # Projectors that exist only trained and come with a component's checkpoint (BLIP-2's Q-Former), by modality.
    projectors: Mapping[str, nn.Module] | None = None
    text: TextEncoder | None = None  # frozen, optional: `text.name`


def load_components(config: MmdialogConfig) -> Components:
    """Load all components, reporting every missing model at once (one sentence each)."""
    loaders: list[Callable[[], dict[str, Any]]] = [lambda: {"speech": SpeechEncoder.from_settings(config.speech)}]
    if config.fusion.image.kind == ProjectorKind.qformer:
        # One BLIP-2 checkpoint holds the vision tower, the image projector and the decoder: loaded once.
        from mmdialog.blip2 import load_blip2_parts

        loaders.append(lambda: load_blip2_parts(config))
    else:
        loaders.append(lambda: {"vision": VisionEncoder.from_settings(config.vision)})
        loaders.append(lambda: {"decoder": Seq2SeqDecoder.from_settings(config.decoder)})
    if config.text.name:
        loaders.append(lambda: {"text": TextEncoder.from_settings(config.text)})
    parts, problems = {}, []
    for load in loaders:
        try:
            parts.update(load())
        except ModelNotAvailableError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ModelNotAvailableError(problems)
    return Components(**parts)


class MultimodalDialogueModel(nn.Module):
    """forward(inputs) -> loss, generate(inputs) -> replies; inputs are `ModelInput`s from the dialogue format."""

    def __init__(self, config: MmdialogConfig, speech: SpeechEncoder, vision: VisionEncoder,
                 decoder: Seq2SeqDecoder, projectors: Mapping[str, nn.Module] | None = None,
                 text: TextEncoder | None = None):
        super().__init__()
        self.config = config
        self.speech = speech
        self.vision = vision
        self.decoder = decoder
        self.text = text
        self.fusion = Fusion(config.fusion, vision.hidden_size, speech.hidden_size, decoder.hidden_size, projectors,
                             image_patches=vision.num_patches, text_dim=text.hidden_size if text else 0)
        for name in COMPONENTS:
            settings = getattr(config, name)
            apply_freeze_policy(self.trainable_part(name), settings.freeze, settings.lora)
        if config.vision.freeze == Freeze.full:
            self.vision.freeze_unreached_parameters()
        # Whisper's own decoder only writes transcripts; it never trains.
        self.speech.whisper.decoder.requires_grad_(False)
        self.fusion.requires_grad_(True)
        # openai-whisper keeps its alignment heads as a sparse buffer, which DDP cannot broadcast;
        # it is a constant of the checkpoint, so there is nothing to synchronise.
        self._ddp_params_and_buffers_to_ignore = ["speech.whisper.alignment_heads"]
        # Ablations for evaluation: encoder features of these modalities are replaced by zeros.
        self.zeroed_modalities: set[str] = set()

    @classmethod
    def from_config(cls, config: MmdialogConfig) -> MultimodalDialogueModel:
        return cls(config, *load_components(config))

    @classmethod
    def from_pretrained(cls, folder: str | Path, overrides: Sequence[str] = ()) -> MultimodalDialogueModel:
        from mmdialog.checkpoint import load_checkpoint

        return load_checkpoint(Path(folder), overrides)

    def save_pretrained(self, folder: str | Path, dtype: torch.dtype | None = None) -> None:
        from mmdialog.checkpoint import save_checkpoint

        save_checkpoint(self, Path(folder), dtype)

    def trainable_part(self, component: str) -> nn.Module:
        """The module a component's freeze policy applies to (and that a checkpoint stores)."""
        return {"speech": self.speech.encoder, "vision": self.vision.tower, "decoder": self.decoder.model}[component]

    def train(self, mode: bool = True) -> MultimodalDialogueModel:
        super().train(mode)
        # Frozen parts stay in eval mode: their dropout must not add noise to the features we learn from.
        for name in COMPONENTS:
            if getattr(self.config, name).freeze == Freeze.frozen:
                self.trainable_part(name).eval()
        self.speech.whisper.decoder.eval()
        return self

    @property
    def tokenizer(self):
        return self.decoder.tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.fusion.parameters()).device

    # ---- media -> soft tokens -------------------------------------------------------------------------

    @property
    def text_mode(self) -> TextMode | None:
        """What a person's words become (mmdialog/dialogue.py); None without a text encoder."""
        return self.config.text.mode if self.text is not None else None

    def feature_length(self, media: Media) -> int:
        if media.features is not None:
            return int(media.features.shape[0])
        if media.kind == "image":
            return self.vision.num_patches
        if media.kind == "text":
            return self._text_encoder().feature_length(media.transcript or "")
        assert media.mel is not None, "audio media needs a mel spectrogram or features"
        return int(media.mel.shape[-1]) // 2

    def soft_token_count(self, media: Media) -> int:
        return self.fusion.soft_token_count(media.kind, self.feature_length(media))

    def encode_media(self, media: Media) -> torch.Tensor:
        """Encoder features of one item (not cached here: callers that may cache decide to)."""
        if media.features is not None:
            features = media.features.to(self.device)
        elif media.kind == "image":
            features = self.vision(media.pixel_values.unsqueeze(0).to(self.device))[0]
        elif media.kind == "text":
            features = self._text_encoder().encode([media.transcript or ""])[0].to(self.device)
        else:
            features = self.speech.fusion_states(media.mel.unsqueeze(0).to(self.device))[0]
        return torch.zeros_like(features) if media.kind in self.zeroed_modalities else features

    def _text_encoder(self) -> TextEncoder:
        if self.text is None:
            raise ModelNotAvailableError(["this model has no text encoder (text.name) for <text> markers"])
        return self.text

    def _soft_tokens(self, media: list[Media]) -> list[torch.Tensor]:
        """Soft tokens for every item: images batched through the vision tower in one pass, and texts through
        the text encoder and its projector."""
        out: list[torch.Tensor | None] = [None] * len(media)
        texts = [i for i, m in enumerate(media) if m.kind == "text"]
        if texts:
            # Texts cut to their sentence embedding in training (train.sentence_only) come with their features.
            fresh = iter(self._text_encoder().encode([media[i].transcript or "" for i in texts
                                                      if media[i].features is None]))
            features = [media[i].features if media[i].features is not None else next(fresh) for i in texts]
            if "text" in self.zeroed_modalities:
                features = [torch.zeros_like(f) for f in features]
            tokens = self.fusion("text", torch.cat(features).to(self.device))
            for i, part in zip(texts, tokens.split([len(f) for f in features]), strict=True):
                out[i] = part
        images = [i for i, m in enumerate(media) if m.kind == "image"]
        if images:
            # Fresh pixels go through the tower in one pass; features computed before (a frozen tower's, cached
            # by the training data) join them, so the projector runs once for all.
            fresh = [i for i in images if media[i].features is None]
            computed = iter(self.vision(torch.stack([media[i].pixel_values for i in fresh]).to(self.device))
                            if fresh else [])
            features = torch.stack([next(computed) if media[i].features is None else media[i].features.to(self.device)
                                    for i in images])
            if "image" in self.zeroed_modalities:
                features = torch.zeros_like(features)
            tokens = self.fusion("image", features)
            for row, i in enumerate(images):
                out[i] = tokens[row]
        for i, item in enumerate(media):
            if out[i] is None:
                out[i] = self.fusion(item.kind, self.encode_media(item))
        return out  # type: ignore[return-value]

    # ---- text + soft tokens -> decoder inputs ---------------------------------------------------------

    def embed(self, inputs: Sequence[ModelInput]) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs_embeds (B, L, d) with soft tokens spliced in at the markers, and the attention mask.

        With `fusion.layout=blip2` images' soft tokens go in front of everything instead (their markers
        vanish), which is where a BLIP-2 checkpoint's language model learned to read its query tokens.
        """
        all_media = [m for item in inputs for m in item.media]
        soft = iter(self._soft_tokens(all_media))
        marker_ids = torch.tensor([self.decoder.image_token_id, self.decoder.audio_token_id,
                                   self.decoder.text_token_id], device=self.device)
        pad_id = self.tokenizer.pad_token_id
        images_first = self.config.fusion.layout == FusionLayout.blip2
        sequences = []
        for item in inputs:
            ids = torch.tensor(item.input_ids, device=self.device)
            is_marker = torch.isin(ids, marker_ids)
            text = self.decoder.embed_tokens(ids.masked_fill(is_marker, pad_id))
            front, pieces, start = [], [], 0
            # The dialogue format lists an input's media in the order of its markers.
            for position, media in zip(is_marker.nonzero().flatten().tolist(), item.media, strict=True):
                tokens = next(soft).to(text.dtype)
                pieces.append(text[start:position])
                (front if images_first and media.kind == "image" else pieces).append(tokens)
                start = position + 1
            pieces.append(text[start:])
            sequences.append(torch.cat(front + pieces))
        length = max(s.shape[0] for s in sequences)
        embeds = sequences[0].new_zeros(len(sequences), length, sequences[0].shape[-1])
        mask = torch.zeros(len(sequences), length, dtype=torch.long, device=self.device)
        for row, seq in enumerate(sequences):
            embeds[row, : seq.shape[0]] = seq
            mask[row, : seq.shape[0]] = 1
        return embeds, mask

    def labels(self, inputs: Sequence[ModelInput]) -> torch.Tensor:
        targets = [item.labels or [] for item in inputs]
        length = max(len(t) for t in targets)
        labels = torch.full((len(targets), length), -100, dtype=torch.long)
        for row, target in enumerate(targets):
            labels[row, : len(target)] = torch.tensor(target, dtype=torch.long)
        return labels.to(self.device)

    def forward(self, inputs: Sequence[ModelInput]) -> Any:
        """Seq2Seq output with `.loss` (mean over assistant tokens) and `.logits`."""
        embeds, mask = self.embed(inputs)
        return self.decoder(embeds, mask, labels=self.labels(inputs))

    def generation_options(self, **overrides: Any) -> dict[str, Any]:
        settings = self.config.generation
        options = {"max_new_tokens": settings.max_new_tokens, "num_beams": settings.num_beams,
                   "do_sample": settings.do_sample, "temperature": settings.temperature, "top_p": settings.top_p}
        options.update(overrides)
        return options

    @torch.inference_mode()
    def generate(self, inputs: Sequence[ModelInput], **options: Any) -> list[str]:
        embeds, mask = self.embed(inputs)
        return self.decoder.generate(embeds, mask, **self.generation_options(**options))

    def stream(self, item: ModelInput, **options: Any) -> Iterator[str]:
        with torch.inference_mode():
            embeds, mask = self.embed([item])
        yield from self.decoder.stream(embeds, mask, **self.generation_options(**options))
