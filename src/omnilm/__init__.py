"""omnilm: compose, train, evaluate and serve multimodal LLMs (image, audio, video → text)."""

from omnilm.config import (
    AudioConfig,
    ConnectorConfig,
    LLMConfig,
    OmniConfig,
    PlaceholderConfig,
    VideoConfig,
    VisionConfig,
)
from omnilm.dual import DualEncoder, DualEncoderConfig
from omnilm.lm import OmniLM, load
from omnilm.model import OmniModel
from omnilm.processor import OmniProcessor

__version__ = "0.1.0"

__all__ = [
    "AudioConfig",
    "ConnectorConfig",
    "DualEncoder",
    "DualEncoderConfig",
    "LLMConfig",
    "OmniConfig",
    "OmniLM",
    "OmniModel",
    "OmniProcessor",
    "PlaceholderConfig",
    "VideoConfig",
    "VisionConfig",
    "load",
]
