"""Images to patch features with any transformers vision tower (CLIP, SigLIP, ViT, ResNet, ConvNeXt), by name,
path or config."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torch import nn
from transformers import AutoConfig, AutoImageProcessor, AutoModel
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from encoders.hub import load_or_explain
from encoders.image_io import ImageInput, load_image
from mmdialog.errors import ConfigError
from mmdialog.settings import VisionSettings


class VisionEncoder(nn.Module):
    """Wraps a vision tower and its image processor; returns the patch features of one hidden layer."""

    def __init__(self, tower: nn.Module, processor, settings: VisionSettings):
        super().__init__()
        self.tower = tower
        self.processor = processor
        self.settings = settings
        config = tower.config
        self.image_size: int = getattr(config, "image_size", settings.image_size)
        self.feature_index = settings.feature_layer  # index into hidden_states
        self._prune_after_feature_layer()
        # Transformers give (B, N, hidden); convolutional towers (ResNet, ConvNeXt) give a (B, C, H, W) map,
        # read here as H*W patches that also carry their (x, y) place: a map's channels do not say where.
        self.is_feature_map = not hasattr(config, "hidden_size")
        if settings.pooled_layers and not self.is_feature_map:
            raise ConfigError("vision.pooled_layers works with convolutional towers (ResNet, ConvNeXt) only")
        self.pooled_channels = 0  # how many of a patch's channels come from vision.pooled_layers
        if self.is_feature_map:
            channels, height, width, self.pooled_channels = self._probe_feature_map()
            self.hidden_size: int = channels + 2
            self.num_patches = height * width
        else:
            self.hidden_size = config.hidden_size
            self.num_patches = (self.image_size // getattr(config, "patch_size", 16)) ** 2

    def channel_groups(self) -> dict[str, slice]:
        """Where each part of a patch's features lies: the chosen layer's channels, the pooled earlier
        layers' (if any) and the grid coordinates (convolutional towers only)."""
        if not self.is_feature_map:
            return {"chosen": slice(0, self.hidden_size)}
        chosen = self.hidden_size - 2 - self.pooled_channels
        groups = {"chosen": slice(0, chosen), "coordinates": slice(self.hidden_size - 2, self.hidden_size)}
        if self.pooled_channels:
            groups["pooled"] = slice(chosen, chosen + self.pooled_channels)
        return groups

    def _prune_after_feature_layer(self) -> None:
        """Drop the layers after the one whose features we use: they cost time and would never train."""
        total = getattr(self.tower.config, "num_hidden_layers", None)
        if total is None or self.settings.last_hidden_state:
            # Convolutional towers name their depth per stage; the tower's own output needs every layer.
            return
        layer = self.settings.feature_layer
        keep = total + 1 + layer if layer < 0 else layer
        lists = [m for m in self.tower.modules() if isinstance(m, nn.ModuleList) and len(m) == total]
        if len(lists) != 1 or not 0 < keep < total:
            return
        del lists[0][keep:]
        self.tower.config.num_hidden_layers = keep
        self.feature_index = -1

    def _probe_feature_map(self) -> tuple[int, int, int, int]:
        """Channels and grid of a convolutional tower's map (pooled layers included), and how many of the
        channels come from the pooled layers; from one blank image in eval mode (batch-norm statistics stay)."""
        was_training = self.tower.training
        self.tower.eval()
        with torch.no_grad():
            chosen, pooled = self._tower_maps(torch.zeros(1, 3, self.image_size, self.image_size))
        self.tower.train(was_training)
        pooled_channels = sum(item.shape[1] for item in pooled)
        return chosen.shape[1] + pooled_channels, chosen.shape[2], chosen.shape[3], pooled_channels

    def freeze_unreached_parameters(self) -> list[str]:
        """Freeze parameters that cannot affect the patch features (pooling heads, final norms).

        Found by one backward pass on a blank image, so it holds for any architecture.
        """
        pixels = torch.zeros(1, 3, self.image_size, self.image_size)
        self.tower.zero_grad(set_to_none=True)
        was_training = self.tower.training
        self.tower.eval()  # gradients flow the same; batch-norm statistics must not learn a blank image
        self(pixels).float().pow(2).sum().backward()
        self.tower.train(was_training)
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

    def _tower_maps(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The tower's output of the configured layer (or its own output), as it comes, and the maps of
        vision.pooled_layers max-pooled to its grid (none unless set)."""
        dtype = next(self.tower.parameters()).dtype
        own_output = self.settings.last_hidden_state
        outputs = self.tower(pixel_values=pixel_values.to(dtype), output_hidden_states=not own_output)
        if own_output:
            return outputs.last_hidden_state, []
        chosen = outputs.hidden_states[self.feature_index]
        # Max, not mean: a small object's colour stays as strong as a large one's, whatever the background.
        pooled = [nn.functional.adaptive_max_pool2d(outputs.hidden_states[i], chosen.shape[-2:])
                  for i in self.settings.pooled_layers]
        return chosen, pooled

    def _tower_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The configured layer's output, with the pooled layers' channels after its own."""
        chosen, pooled = self._tower_maps(pixel_values)
        return torch.cat([chosen, *pooled], dim=1) if pooled else chosen

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, N, hidden) patch features from the configured layer (or the tower's output)."""
        features = self._tower_features(pixel_values)
        if self.is_feature_map:
            return with_grid_coordinates(features)
        # A CLS token sits in front of the patches in CLIP and ViT; SigLIP has none.
        if self.settings.drop_cls_token and features.shape[1] == self.num_patches + 1:
            features = features[:, 1:]
        return features


def with_grid_coordinates(feature_map: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C+2): each cell's features followed by its x and y in [-1, 1], row by row."""
    batch, _, height, width = feature_map.shape
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    grid = torch.stack([xs, ys]).to(feature_map).expand(batch, -1, -1, -1)
    return torch.cat([feature_map, grid], dim=1).flatten(2).transpose(1, 2)
