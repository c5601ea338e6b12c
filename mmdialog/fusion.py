"""Projectors that turn encoder features into "soft tokens" in the decoder's embedding space.

One projector per modality: an MLP (one soft token per input frame/patch), a frame-stacking downsampler
for speech (k consecutive frames concatenated, then an MLP: 50 Hz Whisper frames become 12.5 Hz tokens),
and a learned-query resampler for images (a fixed number of tokens whatever the patch count). A projector that
only exists pretrained (BLIP-2's Q-Former, mmdialog/blip2.py) comes in ready-made instead of being built here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from mmdialog.errors import ConfigError
from mmdialog.settings import FusionSettings, ProjectorKind, ProjectorSettings


class MLPProjector(nn.Module):
    """features (N, in) -> soft tokens (N, out): Linear, GELU, Linear, as LLaVA-1.5's projector.

    `positions`: a learned embedding for each of that many patches, added to the soft token of the patch in
    that place (the input must then always hold exactly that many). A small tower's features say where a
    patch lies only in two coordinate channels among hundreds; the embedding makes it as plain as what it shows.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_mult: int = 2, positions: int = 0):
        super().__init__()
        hidden = out_dim * hidden_mult
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        self.positions = nn.Parameter(torch.randn(positions, out_dim) * 0.02) if positions else None

    def output_length(self, input_length: int) -> int:
        return input_length

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        tokens = self.net(features)
        if self.positions is None:
            return tokens
        if tokens.shape[-2] != len(self.positions):
            raise ConfigError(f"fusion.image.position_embeddings: the tower gave {tokens.shape[-2]} patches, "
                              f"the projector was built for {len(self.positions)}")
        return tokens + self.positions


class FrameStackProjector(nn.Module):
    """(N, in) -> (ceil(N / k), out): concatenates k consecutive frames, so long audio costs fewer tokens."""

    def __init__(self, in_dim: int, out_dim: int, stack: int, hidden_mult: int = 2):
        super().__init__()
        self.stack = stack
        self.mlp = MLPProjector(in_dim * stack, out_dim, hidden_mult)

    def output_length(self, input_length: int) -> int:
        return math.ceil(input_length / self.stack)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        length, dim = features.shape[-2:]
        remainder = (-length) % self.stack
        if remainder:
            # Repeat the last frame rather than pad zeros: zeros are a valid-looking but false signal.
            features = torch.cat([features, features[..., -1:, :].expand(*features.shape[:-2], remainder, dim)], -2)
        stacked = features.reshape(*features.shape[:-2], -1, dim * self.stack)
        return self.mlp(stacked)


class ResamplerProjector(nn.Module):
    """(N, in) -> (num_tokens, out): learned queries cross-attend to the features (Flamingo's Perceiver idea)."""

    def __init__(self, in_dim: int, out_dim: int, num_tokens: int, layers: int, heads: int, hidden_mult: int = 2):
        super().__init__()
        self.num_tokens = num_tokens
        # Vision towers' hidden states are large and dominated by a few channels; unnormalised, they
        # saturate the attention and every image resamples to nearly the same tokens (as in Flamingo,
        # the media features are layer-normed first).
        self.input_norm = nn.LayerNorm(in_dim)
        self.input = nn.Linear(in_dim, out_dim)
        self.queries = nn.Parameter(torch.randn(num_tokens, out_dim) * out_dim**-0.5)
        self.blocks = nn.ModuleList(
            nn.TransformerDecoderLayer(
                d_model=out_dim, nhead=heads, dim_feedforward=out_dim * hidden_mult,
                dropout=0.0, activation="gelu", batch_first=True, norm_first=True,
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(out_dim)

    def output_length(self, input_length: int) -> int:
        return self.num_tokens

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batched = features.dim() == 3
        memory = self.input(self.input_norm(features if batched else features.unsqueeze(0)))
        tokens = self.queries.unsqueeze(0).expand(memory.shape[0], -1, -1)
        for block in self.blocks:
            tokens = block(tokens, memory)
        tokens = self.norm(tokens)
        return tokens if batched else tokens.squeeze(0)


def build_projector(settings: ProjectorSettings, in_dim: int, out_dim: int, patches: int = 0) -> nn.Module:
    """`patches`: how many feature vectors every input holds (an image tower's grid), for position embeddings;
    0 where it varies (speech)."""
    if settings.position_embeddings and (settings.kind != ProjectorKind.mlp or not patches):
        raise ConfigError("fusion.*.position_embeddings works with the mlp image projector only")
    if settings.kind == ProjectorKind.qformer:
        raise ConfigError("the qformer projector comes trained with a BLIP-2 checkpoint and serves images only: "
                          "set fusion.image.kind=qformer and vision.name / decoder.name to that checkpoint")
    if settings.kind == ProjectorKind.mlp:
        return MLPProjector(in_dim, out_dim, settings.hidden_mult, patches if settings.position_embeddings else 0)
    if settings.kind == ProjectorKind.framestack:
        return FrameStackProjector(in_dim, out_dim, settings.stack, settings.hidden_mult)
    return ResamplerProjector(in_dim, out_dim, settings.num_tokens, settings.layers, settings.heads,
                              settings.hidden_mult)


class Fusion(nn.Module):
    """The trainable bridge: a projector per modality plus an optional learned embedding per modality."""

    def __init__(self, settings: FusionSettings, image_dim: int, audio_dim: int, model_dim: int,
                 pretrained: Mapping[str, nn.Module] | None = None, image_patches: int = 0, text_dim: int = 0):
        """`pretrained`: ready-made projectors by modality (BLIP-2's Q-Former), used instead of building one.
        `image_patches`: how many patch features the vision tower gives per image. `text_dim`: the text
        encoder's width; 0 when there is none (and then no text projector)."""
        super().__init__()
        pretrained = pretrained or {}
        dims = {"image": image_dim, "audio": audio_dim, "text": text_dim}
        patches = {"image": image_patches}
        self.modalities = [m for m, dim in dims.items() if dim]
        self.projectors = nn.ModuleDict({
            m: pretrained[m] if m in pretrained
            else build_projector(getattr(settings, m), dims[m], model_dim, patches.get(m, 0))
            for m in self.modalities
        })
        self.modality_embeddings = (
            nn.ParameterDict({m: nn.Parameter(torch.zeros(model_dim)) for m in self.modalities})
            if settings.modality_embeddings else None
        )

    def soft_token_count(self, modality: str, feature_length: int) -> int:
        return self.projectors[modality].output_length(feature_length)

    def forward(self, modality: str, features: torch.Tensor) -> torch.Tensor:
        tokens = self.projectors[modality](features)
        if self.modality_embeddings is not None:
            tokens = tokens + self.modality_embeddings[modality]
        return tokens
