"""BLIP-2 (FLAN-T5) as an mmdialog model: image understanding out of the box.

A BLIP-2 checkpoint (transformers' Blip2ForConditionalGeneration with a T5 language model, such as
Salesforce/blip2-flan-t5-xl) is loaded once and split into our parts: its vision tower becomes the vision
encoder, its Q-Former with query tokens and language projection the image projector (`qformer`), its T5 the
decoder, with the checkpoint's tokenizer. With `fusion.layout: blip2` the fused model computes what BLIP-2
computes: the projected query tokens first, then the embedded prompt. The speech projector is ours and starts
untrained, so such a model hears through Whisper's transcripts (`speech.mode: transcript`) until one is trained.

In a config: `fusion.image.kind: qformer` with `vision.name` and `decoder.name` naming the checkpoint
(configs/blip2.yaml); `import_blip2(name)` sets all of that on any config. Saved models keep referring to the
checkpoint by name, so `mmdialog.checkpoint` reloads them through `load_blip2_parts` too.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoImageProcessor, Blip2ForConditionalGeneration

from decoders.seq2seq import Seq2SeqDecoder, load_tokenizer
from encoders.hub import load_or_explain
from encoders.vision import VisionEncoder
from mmdialog.config import load_config
from mmdialog.errors import ConfigError
from mmdialog.model import MultimodalDialogueModel
from mmdialog.settings import FusionLayout, MmdialogConfig, ProjectorKind

PRESET = "blip2"
WHAT = "BLIP-2 model"


class QFormerProjector(nn.Module):
    """Image features (N, in) or (B, N, in) -> (num_query_tokens, out): BLIP-2's learned queries read the image
    through its Q-Former; its language projection maps them into the decoder's embedding space.

    Holds transformers' own modules (Blip2QFormerModel, the query tokens, the projection), so the weights are
    the checkpoint's and a saved state dict loads straight back into a freshly imported one.
    """

    trained_elsewhere = True  # fine-tuned at train.lr_full, as a pretrained component (training/optim.py)

    def __init__(self, qformer: nn.Module, query_tokens: nn.Parameter, language_projection: nn.Linear):
        super().__init__()
        self.qformer = qformer
        # Named as the resampler's learned queries, so training treats both alike (no weight decay on them).
        self.queries = query_tokens
        self.language_projection = language_projection

    @classmethod
    def from_blip2(cls, model: Blip2ForConditionalGeneration) -> QFormerProjector:
        return cls(model.qformer, model.query_tokens, model.language_projection)

    def output_length(self, input_length: int) -> int:
        return int(self.queries.shape[1])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batched = features.dim() == 3
        image_embeds = features if batched else features.unsqueeze(0)
        # BLIP-2 was trained with the Q-Former and its projection in fp32 outside autocast (LAVIS; transformers
        # keeps them in fp32 too): bf16 there would change the image tokens, so autocast stops here.
        with torch.autocast(image_embeds.device.type, enabled=False):
            image_embeds = image_embeds.to(self.queries.dtype)
            # Every patch is real; the all-ones mask is what BLIP-2 passes too, so the same attention path runs.
            mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
            queries = self.queries.expand(image_embeds.shape[0], -1, -1)
            output = self.qformer(query_embeds=queries, encoder_hidden_states=image_embeds,
                                  encoder_attention_mask=mask).last_hidden_state
            tokens = self.language_projection(output.to(self.language_projection.weight.dtype))
        return tokens if batched else tokens.squeeze(0)


def checkpoint_name(config: MmdialogConfig) -> str:
    """The BLIP-2 checkpoint a `qformer` config is built from; a ConfigError for settings that would feed its
    parts anything other than what they were trained on."""
    vision, decoder = config.vision, config.decoder
    if not vision.name or decoder.name != vision.name:
        raise ConfigError(
            "fusion.image.kind=qformer takes the vision tower, Q-Former and language model from one BLIP-2 "
            f"checkpoint: set vision.name and decoder.name both to it (now '{vision.name}' and '{decoder.name}')"
        )
    if not vision.last_hidden_state or vision.drop_cls_token:
        raise ConfigError("BLIP-2's Q-Former reads the vision tower's whole output: set "
                          "vision.last_hidden_state=true and vision.drop_cls_token=false")
    return vision.name


def _check_architecture(name: str, hub_config: Any) -> None:
    model_type = getattr(hub_config, "model_type", "unknown")
    if model_type == "instructblip":
        raise ConfigError(f"'{name}' is InstructBLIP, whose Q-Former also reads the instruction text, which an "
                          "image projector here never sees; use a BLIP-2 checkpoint such as "
                          "Salesforce/blip2-flan-t5-xl")
    text_config = getattr(hub_config, "text_config", None)
    if model_type != "blip-2" or not getattr(text_config, "is_encoder_decoder", False):
        found = model_type if model_type != "blip-2" else f"BLIP-2 with a {text_config.model_type} language model"
        raise ConfigError(f"'{name}' is {found}, not BLIP-2 with a T5 language model (the decoder here is a "
                          "seq2seq model); use a checkpoint such as Salesforce/blip2-flan-t5-xl")


def load_blip2_parts(config: MmdialogConfig) -> dict[str, Any]:
    """The vision encoder, decoder and image projector of the BLIP-2 checkpoint a `qformer` config names,
    as `mmdialog.model.Components` fields; the checkpoint is read once."""
    name = checkpoint_name(config)
    _check_architecture(name, load_or_explain(WHAT, name, AutoConfig.from_pretrained))
    # fp32 whatever the checkpoint stores, like every other component: CUDA runs the model under autocast
    # (mmdialog/device.py), and T5 overflows in plain fp16.
    blip2 = load_or_explain(WHAT, name, Blip2ForConditionalGeneration.from_pretrained, dtype=torch.float32)
    processor = load_or_explain("image processor", name, AutoImageProcessor.from_pretrained)
    return {
        "vision": VisionEncoder(blip2.vision_model, processor, config.vision),
        "decoder": Seq2SeqDecoder(blip2.language_model, load_tokenizer(config.decoder), config.decoder),
        "projectors": {"image": QFormerProjector.from_blip2(blip2)},
    }


def blip2_config(name: str, base: MmdialogConfig | None = None) -> MmdialogConfig:
    """`base` (default: the blip2 preset) made to build its vision, image fusion and decoder from the BLIP-2
    checkpoint `name` (hub name or folder), laid out as BLIP-2 was trained; its other settings are kept."""
    config = copy.deepcopy(base) if base is not None else load_config(PRESET)
    local = Path(name).expanduser()
    # A folder is stored absolute: a saved model must find it again from any working directory.
    name = str(local.resolve()) if local.exists() else name
    vision, decoder, fusion = config.vision, config.decoder, config.fusion
    vision.name, vision.config, vision.last_hidden_state, vision.drop_cls_token = name, {}, True, False
    # The checkpoint's tokenizer: its embeddings were trained with those ids.
    decoder.name, decoder.config, decoder.tokenizer = name, {}, None
    fusion.image.kind, fusion.layout = ProjectorKind.qformer, FusionLayout.blip2
    # BLIP-2 adds nothing to its query tokens; a zero vector would be the same today but drift once trained.
    fusion.modality_embeddings = False
    return config


def import_blip2(name: str, config: MmdialogConfig | None = None) -> MultimodalDialogueModel:
    """The model of a BLIP-2 FLAN-T5 checkpoint (hub name or folder), with `config`'s speech encoder and
    run-time settings around it (default: the blip2 preset). A missing model is one sentence naming it."""
    return MultimodalDialogueModel.from_config(blip2_config(name, config))
