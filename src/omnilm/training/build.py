"""Pieces a training run is built from: the model, the precision, the learning-rate schedule."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from omnilm.config import OmniConfig
from omnilm.errors import ConfigError
from omnilm.lm import OmniLM
from omnilm.sources import resolve_source
from omnilm.training.config import ModelSection, OptimSection

logger = logging.getLogger(__name__)


def build_model(section: ModelSection, seed: int) -> tuple[OmniLM, Path | None]:
    """The model to train and the directory its relative sources resolve against (a checkpoint's)."""
    torch.manual_seed(seed)  # fresh connectors are drawn from the run's seed
    if section.tiny:
        from omnilm.testing import tiny_model

        return tiny_model(tuple(section.tiny), section.tiny_connector), None
    if section.checkpoint:
        from omnilm.checkpoint import load_checkpoint

        directory = Path(resolve_source(section.checkpoint))
        model, processor = load_checkpoint(directory)
        return OmniLM(model, processor, name=section.checkpoint), directory
    return OmniLM.from_config(model_config(section)), None


def model_config(section: ModelSection) -> OmniConfig:
    """The OmniConfig of the model to train, read from configs only (nothing is loaded)."""
    if section.tiny:
        from omnilm.testing import tiny_config

        return tiny_config(tuple(section.tiny), section.tiny_connector)
    if section.checkpoint:
        from omnilm.checkpoint import CONFIG_FILE

        return OmniConfig.from_file(Path(resolve_source(section.checkpoint)) / CONFIG_FILE)
    if isinstance(section.config, dict):
        return OmniConfig.from_dict(section.config)
    return OmniConfig.from_file(section.config)


def resolve_precision(value: str) -> str:
    """Accelerate's mixed_precision for `optim.mixed_precision` on this machine."""
    cuda = torch.cuda.is_available()
    if value == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
    if value == "fp16" and not cuda:
        raise ConfigError("optim.mixed_precision: fp16 needs a CUDA GPU; use bf16 or no on a CPU")
    return value


def make_scheduler(optimizer: torch.optim.Optimizer, optim: OptimSection, total_steps: int):
    """Linear warmup, then cosine or linear decay to zero (or constant) over `total_steps`."""
    import transformers

    warmup = optim.warmup_steps if optim.warmup_steps is not None else round(optim.warmup_ratio * total_steps)
    if warmup > total_steps:
        raise ConfigError(f"optim.warmup_steps: {warmup} warmup steps exceed the {total_steps} training steps")
    if optim.schedule == "cosine":
        return transformers.get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    if optim.schedule == "linear":
        return transformers.get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    return transformers.get_constant_schedule_with_warmup(optimizer, warmup)
