"""Images to patch features with any transformers vision tower (CLIP, SigLIP, ViT), by name, path or config."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torch import nn
from transformers import AutoConfig, AutoImageProcessor, AutoModel
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from encoders.hub import load_or_explain
from encoders.image_io import ImageInput, load_image
from mmdialog.settings import VisionSettings


class VisionEncoder(nn.Module):
    """Wraps a vision tower and its image processor; returns the patch features of one hidden layer."""

    def __init__(self, tower: nn.Module, processor, settings: VisionSettings):
        super().__init__()
        self.tower = tower
        self.processor = processor
        self.settings = settings
        config = tower.config
        self.hidden_size: int = config.hidden_size
        self.image_size: int = getattr(config, "image_size", settings.image_size)
        patch_size = getattr(config, "patch_size", 16)
        self.num_patches = (self.image_size // patch_size) ** 2
        self.feature_index = settings.feature_layer  # index into hidden_states
        self._prune_after_feature_layer()

    def _prune_after_feature_layer(self) -> None:
        """Drop the layers after the one whose features we use: they cost time and would never train."""
        total = getattr(self.tower.config, "num_hidden_layers", None)
        layer = self.settings.feature_layer
        keep = total + 1 + layer if layer < 0 else layer
        lists = [m for m in self.tower.modules() if isinstance(m, nn.ModuleList) and len(m) == total]
        if total is None or len(lists) != 1 or not 0 < keep < total:
            return
        del lists[0][keep:]
        self.tower.config.num_hidden_layers = keep
        self.feature_index = -1

    def freeze_unreached_parameters(self) -> list[str]:
        """Freeze parameters that cannot affect the patch features (pooling heads, final norms).

        Found by one backward pass on a blank image, so it holds for any architecture.
        """
        pixels = torch.zeros(1, 3, self.image_size, self.image_size)
        self.tower.zero_grad(set_to_none=True)
        self(pixels).float().pow(2).sum().backward()
        unreached = [n for n, p in self.tower.named_parameters() if p.requires_grad and p.grad is None]
        for name, param in self.tower.named_parameters():
            param.grad = None
            if name in unreached:
                param.requires_grad_(False)
        return unreached

    @classmethod
    def from_settings(cls, settings: VisionSettings) -> VisionEncoder:
        if settings.name:
            model = load_or_explain("vision encoder", settings.name, AutoModel.from_pretrained)
            processor = load_or_explain("image processor", settings.name, AutoImageProcessor.from_pretrained)
            # CLIP / SigLIP checkpoints hold a text tower too; only the vision half is ours.
            tower = getattr(model, "vision_model", model)
            if tower is not model:
                tower.config = getattr(model.config, "vision_config", tower.config)
        else:
            config = AutoConfig.for_model(**settings.config)
            tower = AutoModel.from_config(config)
            size = settings.image_size
            processor = CLIPImageProcessorPil(
                size={"shortest_edge": size}, crop_size={"height": size, "width": size}
            )
        return cls(tower, processor, settings)

    def preprocess(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Pixel values (B, 3, H, W) for the tower, after EXIF rotation, RGB conversion and resizing."""
        pil: list[Image.Image] = [load_image(image) for image in images]
        return self.processor(images=pil, return_tensors="pt")["pixel_values"]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, N, hidden) patch features from the configured layer."""
        dtype = next(self.tower.parameters()).dtype
        outputs = self.tower(pixel_values=pixel_values.to(dtype), output_hidden_states=True)
        features = outputs.hidden_states[self.feature_index]
        # A CLS token sits in front of the patches in CLIP and ViT; SigLIP has none.
        if self.settings.drop_cls_token and features.shape[1] == self.num_patches + 1:
            features = features[:, 1:]
        return features
