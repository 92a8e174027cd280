"""omnilm: compose, train, evaluate and serve multimodal LLMs (image, audio, video → text)."""

import os

# OpenMP threads (torch's and llama.cpp's share one libgomp, configured when it loads) wait by sleeping, not
# spinning: on a CPU shared with other processes, spinning threads stall each other at every barrier (measured
# on 2 busy cores: Qwen2.5-0.5B decode 0.7-1.2 → 4.6-5.3 tokens/s in transformers, llama.cpp 3.6 s → 50 ms a token).
# Set before torch is imported; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
