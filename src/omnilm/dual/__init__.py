"""CLIP-style dual encoders: contrastive training (LiT or full, via `omnilm train`), zero-shot
classification, image search."""

from omnilm.dual.api import DualEncoder, embed_request
from omnilm.dual.config import DualEncoderConfig, TextTowerConfig, VisionTowerConfig
from omnilm.dual.model import DualEncoderModel, contrastive_loss

__all__ = [
    "DualEncoder",
    "DualEncoderConfig",
    "DualEncoderModel",
    "TextTowerConfig",
    "VisionTowerConfig",
    "contrastive_loss",
    "embed_request",
]
