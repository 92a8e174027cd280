"""CLIP-style dual encoders: contrastive training (LiT or full), zero-shot classification, image search."""

from omnilm.dual.api import DualModel, embed_request, is_dual_checkpoint, load_dual
from omnilm.dual.config import DualEncoderConfig, DualStage, DualTrainConfig, TextTowerConfig, VisionTowerConfig
from omnilm.dual.model import DualEncoder, contrastive_loss

__all__ = [
    "DualEncoder",
    "DualEncoderConfig",
    "DualModel",
    "DualStage",
    "DualTrainConfig",
    "TextTowerConfig",
    "VisionTowerConfig",
    "contrastive_loss",
    "embed_request",
    "is_dual_checkpoint",
    "load_dual",
]
