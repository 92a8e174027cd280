"""DualEncoderModel: a vision tower and a text tower mapped into one embedding space (CLIP / LiT).

    pixel_values (N, 3, S, S) → vision tower → pooled (N, C_v) → vision_proj → unit vectors (N, D)
    input_ids (M, L)          → text tower   → pooled (M, C_t) → text_proj   → unit vectors (M, D)
    logits (N, M) = exp(logit_scale) · image_embeds @ text_embedsᵀ; loss: symmetric InfoNCE

Pooled tower outputs ("features") are exposed separately so a locked tower's features can be computed
once and cached; the heads then train on them directly.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from omnilm.config import torch_dtype
from omnilm.dual.config import DualEncoderConfig
from omnilm.encoders.vision import load_vision_tower, prefix_token_count, vision_tower_config
from omnilm.sources import resolve_source

# Dual-encoder checkpoints whose text tower has its own class (AutoModel would load both towers).
_TEXT_TOWERS = {"clip": "CLIPTextModel", "siglip": "SiglipTextModel"}


@dataclass
class DualOutput:
    loss: torch.Tensor | None
    logits_per_image: torch.Tensor  # (N, M) scaled cosine similarities
    image_embeds: torch.Tensor  # (N, D) unit vectors
    text_embeds: torch.Tensor  # (M, D) unit vectors


def contrastive_loss(logits: torch.Tensor, positives: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over (N, N) logits; image i and text i are the pair.

    `positives` (N, N) bool marks further matching pairs (e.g. two images with the same caption): the
    target then spreads evenly over them instead of treating identical captions as negatives.
    """
    n = logits.shape[0]
    if positives is None:
        targets = torch.arange(n, device=logits.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2
    positives = positives.float() + torch.eye(n, device=logits.device)  # the pair itself always matches
    positives = positives.clamp(max=1)
    image_targets = positives / positives.sum(1, keepdim=True)  # (N, N) rows: images → texts
    text_targets = positives.t() / positives.t().sum(1, keepdim=True)  # (N, N) rows: texts → images
    return (F.cross_entropy(logits, image_targets) + F.cross_entropy(logits.t(), text_targets)) / 2


def _projection(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim, bias=False)  # CLIP: a bias-free linear map
    return nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim))


class DualEncoderModel(nn.Module):
    def __init__(self, config: DualEncoderConfig, *, vision_tower: nn.Module, text_tower: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.vision_tower = vision_tower
        self.text_tower = text_tower
        tower_config = vision_tower_config(vision_tower.config)
        self.num_prefix = prefix_token_count(vision_tower.config)  # CLS + register tokens before the patches
        if config.vision.pooling != "mean" and self.num_prefix == 0 and not _has_pooler(vision_tower):
            raise ValueError(f"vision.pooling: {config.vision.source} has no CLS token; use pooling: mean")
        parameters = inspect.signature(vision_tower.forward).parameters
        self._interpolate = "interpolate_pos_encoding" in parameters  # DINOv2 always interpolates
        width = tower_config.hidden_size
        self.vision_dim = 2 * width if config.vision.pooling == "cls_mean" else width
        self.text_dim = text_tower.config.hidden_size
        d = config.projection_dim
        self.vision_proj = _projection(config.projection, self.vision_dim, d)
        self.text_proj = _projection(config.projection, self.text_dim, d)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.init_temperature)))  # log(1/T)

    @classmethod
    def from_config(cls, config: DualEncoderConfig, *, base_dir: str | Path | None = None) -> DualEncoderModel:
        """Load both towers from their sources; fresh (seeded by the caller) projection heads."""
        import transformers

        vision = load_vision_tower(resolve_source(config.vision.source, base_dir), dtype=torch_dtype(config.vision.dtype),
                                   trust_remote_code=config.vision.trust_remote_code)
        text_source = resolve_source(config.text.source, base_dir)
        text_config = transformers.AutoConfig.from_pretrained(text_source,
                                                              trust_remote_code=config.text.trust_remote_code)
        text_class = getattr(transformers, _TEXT_TOWERS.get(text_config.model_type, "AutoModel"))
        text = text_class.from_pretrained(text_source, dtype=torch_dtype(config.text.dtype),
                                          trust_remote_code=config.text.trust_remote_code)
        text = getattr(text, "text_model", text) if text_class is transformers.AutoModel else text
        return cls(config, vision_tower=vision, text_tower=text)

    @property
    def logit_scale_value(self) -> torch.Tensor:
        """exp(logit_scale), clamped at `max_logit_scale` as CLIP does."""
        return self.logit_scale.clamp(max=math.log(self.config.max_logit_scale)).exp()

    # Towers → pooled features ----------------------------------------------------------------------
    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (N, 3, S, S) → pooled vision features (N, C_v)."""
        dtype = next(self.vision_tower.parameters()).dtype
        kwargs = {"interpolate_pos_encoding": True} if self._interpolate else {}
        out = self.vision_tower(pixel_values=pixel_values.to(dtype), **kwargs)
        hidden = out.last_hidden_state  # (N, prefix + P, C)
        patches_mean = hidden[:, self.num_prefix :].mean(dim=1)  # (N, C)
        pooling = self.config.vision.pooling
        if pooling == "mean":
            return patches_mean.float()
        cls_token = hidden[:, 0] if self.num_prefix else out.pooler_output  # (N, C)
        if pooling == "cls":
            return cls_token.float()
        return torch.cat([cls_token, patches_mean], dim=-1).float()  # (N, 2C)

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask (M, L) → pooled text features (M, C_t)."""
        hidden = self.text_tower(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (M, L, C)
        if self.config.text.pooling == "cls":
            return hidden[:, 0].float()
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (M, L, 1)
        return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float()  # (M, C)

    # Features → unit embeddings ----------------------------------------------------------------------
    def embed_image_features(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.vision_proj(features), dim=-1)  # (N, C_v) → (N, D)

    def embed_text_features(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(features), dim=-1)  # (M, C_t) → (M, D)

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (N, 3, S, S) → unit image embeddings (N, D)."""
        return self.embed_image_features(self.image_features(pixel_values))

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask (M, L) → unit text embeddings (M, D)."""
        return self.embed_text_features(self.text_features(input_ids, attention_mask))

    def forward(
        self,
        *,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        text_features: torch.Tensor | None = None,
        text_index: torch.Tensor | None = None,
        positives: torch.Tensor | None = None,
        return_loss: bool = True,
    ) -> DualOutput:
        """Images (pixels or cached features) and their paired texts (ids or cached features) → loss, logits.

        `text_index` (N,) picks text i of the batch from the given texts: each distinct caption of a batch
        runs through the text tower once (U texts → N pairs).
        """
        if image_features is None:
            if pixel_values is None:
                raise ValueError("DualEncoderModel.forward needs pixel_values or image_features")
            image_features = self.image_features(pixel_values)
        if text_features is None:
            if input_ids is None or attention_mask is None:
                raise ValueError("DualEncoderModel.forward needs input_ids + attention_mask or text_features")
            text_features = self.text_features(input_ids, attention_mask)  # (U, C_t)
        if text_index is not None:
            text_features = text_features[text_index]  # (U, C_t) → (N, C_t)
        image_embeds = self.embed_image_features(image_features)  # (N, D)
        text_embeds = self.embed_text_features(text_features)  # (M, D)
        logits = self.logit_scale_value * image_embeds @ text_embeds.t()  # (N, M)
        loss = None
        if return_loss:
            if logits.shape[0] != logits.shape[1]:
                raise ValueError(f"the loss needs one text per image; got {logits.shape[0]} images, "
                                 f"{logits.shape[1]} texts")
            loss = contrastive_loss(logits, positives)
        return DualOutput(loss, logits, image_embeds, text_embeds)

    # Which weights a checkpoint stores ---------------------------------------------------------------
    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """Heads and temperature, plus every tower named in `config.trained_parts` (the rest has a source)."""
        prefixes = tuple(f"{part}_tower." for part in self.config.trained_parts)
        towers = ("vision_tower.", "text_tower.")
        return {k: v for k, v in self.state_dict().items() if not k.startswith(towers) or k.startswith(prefixes)}


def _has_pooler(tower: nn.Module) -> bool:
    return any(name.startswith(("head", "pooler", "post_layernorm")) for name, _ in tower.named_children())
