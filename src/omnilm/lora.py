"""LoRA adapters on the LLM through PEFT: attach, and merge into the base weights for export."""

from __future__ import annotations

from typing import Any

from torch import nn

DEFAULT_LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"}


def attach_lora(model: nn.Module, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Wrap `model.llm` with LoRA adapters; returns the settings used (stored in OmniConfig.lora)."""
    from peft import LoraConfig, get_peft_model

    settings = {**DEFAULT_LORA, **(settings or {})}
    model.llm = get_peft_model(model.llm, LoraConfig(task_type="CAUSAL_LM", **settings))
    model.config.lora = settings
    return settings


def merge_lora(model: nn.Module) -> None:
    """Fold the adapters into the LLM's weights; the LLM becomes a plain transformers model again."""
    if model.config.lora is None:
        return
    model.llm = model.llm.merge_and_unload()
    model.config.lora = None
    if "llm" not in model.config.trained_parts:
        model.config.trained_parts.append("llm")  # merged weights differ from the base: store them
