"""Vision encoder: any transformers vision model → patch features (N, T, C), optionally pooled."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from omnilm.errors import ConfigError

# Dual-encoder checkpoints whose vision tower has its own class (loading the full model wastes memory).
_VISION_TOWERS = {"clip": "CLIPVisionModel", "siglip": "SiglipVisionModel", "siglip2": "Siglip2VisionModel"}
_NO_CLS_TYPES = ("siglip", "siglip_vision_model", "siglip2", "siglip2_vision_model")


def vision_tower_config(config):
    """The config of the vision tower itself (a dual-encoder config holds it as `vision_config`)."""
    return getattr(config, "vision_config", None) or config


def prefix_token_count(config) -> int:
    """CLS and register tokens that precede the patch tokens."""
    tower = vision_tower_config(config)
    if tower.model_type in _NO_CLS_TYPES:
        return 0
    return 1 + int(getattr(tower, "num_register_tokens", 0) or 0)


def pooled_grid(grid: int, pooling: str, pool_size: int) -> int:
    """Side of the patch grid after pooling a `grid`×`grid` layout."""
    if pooling == "none" or pool_size == 1:
        return grid
    if pooling == "pixel_shuffle" and grid % pool_size:
        raise ConfigError(f"vision.pool_size: pixel_shuffle needs the patch grid ({grid}) divisible by {pool_size}")
    return math.ceil(grid / pool_size)


def load_vision_tower(source: str, *, dtype: torch.dtype, trust_remote_code: bool = False) -> nn.Module:
    """Load only the vision tower of `source` (CLIP/SigLIP towers by class, else AutoModel)."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    tower_class = _VISION_TOWERS.get(config.model_type)
    if tower_class is not None:
        return getattr(transformers, tower_class).from_pretrained(source, dtype=dtype)
    model = transformers.AutoModel.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code)
    return getattr(model, "vision_model", model)


class VisionEncoder(nn.Module):
    """pixel_values (N, 3, S, S) → features (N, T, C_out).

    T = prefix tokens (unless dropped) + pooled patch grid²; C_out = C, or C·k² for pixel shuffle.
    """

    def __init__(
        self, tower: nn.Module, *, feature_layer: int, drop_cls: bool, pooling: str, pool_size: int, image_size: int
    ) -> None:
        super().__init__()
        self.tower = tower
        self.feature_layer = feature_layer
        self.drop_cls = drop_cls
        self.pooling = pooling
        self.pool_size = pool_size
        tower_config = vision_tower_config(tower.config)
        self.num_prefix = prefix_token_count(tower.config)
        self.grid = image_size // tower_config.patch_size
        pooled_grid(self.grid, pooling, pool_size)  # refuses a grid that pixel_shuffle cannot split
        self.interpolate = image_size != getattr(tower_config, "image_size", image_size)
        self.hidden_size = tower_config.hidden_size

    @property
    def out_dim(self) -> int:
        return self.hidden_size * (self.pool_size**2 if self.pooling == "pixel_shuffle" else 1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        kwargs = {"interpolate_pos_encoding": True} if self.interpolate else {}
        out = self.tower(pixel_values=pixel_values, output_hidden_states=True, **kwargs)
        hidden = out.hidden_states[self.feature_layer]  # (N, prefix + G², C)
        prefix, patches = hidden[:, : self.num_prefix], hidden[:, self.num_prefix :]
        patches = self._pool(patches)  # (N, G'², C_out)
        if self.drop_cls or self.num_prefix == 0:
            return patches
        if self.pooling == "pixel_shuffle":
            raise ConfigError("vision: keeping CLS tokens with pixel_shuffle pooling mixes widths; set drop_cls: true")
        return torch.cat([prefix, patches], dim=1)  # (N, prefix + G'², C)

    def _pool(self, patches: torch.Tensor) -> torch.Tensor:
        if self.pooling == "none" or self.pool_size == 1:
            return patches
        n, _, c = patches.shape
        k, g = self.pool_size, self.grid
        grid = patches.reshape(n, g, g, c)  # (N, G, G, C) row-major patch layout
        if self.pooling == "avg":
            pooled = F.avg_pool2d(grid.permute(0, 3, 1, 2), k, ceil_mode=True)  # (N, C, G', G')
            return pooled.flatten(2).transpose(1, 2)  # (N, G'², C)
        # pixel shuffle: each k×k block of patches becomes one token with k²·C channels
        blocks = grid.reshape(n, g // k, k, g // k, k, c).permute(0, 1, 3, 2, 4, 5)  # (N, G', G', k, k, C)
        return blocks.reshape(n, (g // k) ** 2, k * k * c)  # (N, G'², k²C)
