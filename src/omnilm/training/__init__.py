"""Training: stages as settings (frozen / full / LoRA / QLoRA per part) on Hugging Face Accelerate."""

from omnilm.training.config import TrainConfig
from omnilm.training.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
