"""Stages as settings: freeze or train each part (full / LoRA / QLoRA) and build its optimizer group.

Parts: `vision`, `audio` (encoders), `connectors` (each may be overridden in `per_connector`; the video
frame-order embedding follows the video connector) and `llm`. A part trained in full is added to
`config.trained_parts` so checkpoints store it; LoRA adapters are always stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from omnilm.errors import ConfigError
from omnilm.model import OmniModel
from omnilm.training.config import OptimSection, PartStage, StageSection

logger = logging.getLogger(__name__)


def apply_stage(model: OmniModel, stage: StageSection, *, base_dir: str | Path | None = None) -> None:
    """Set `requires_grad` of every parameter from `stage`; attach LoRA / QLoRA adapters to the LLM."""
    model.requires_grad_(False)
    mode = stage.llm.mode
    if mode in ("lora", "qlora"):
        if mode == "qlora":
            _quantize_llm(model, base_dir)
        if model.config.lora is None:
            from omnilm.lora import attach_lora

            attach_lora(model, stage.lora.peft_settings())
        elif model.config.lora.get("r") != stage.lora.r:
            logger.warning("the model already carries LoRA adapters (r=%s); training those, not stage.lora (r=%s)",
                           model.config.lora.get("r"), stage.lora.r)
        for name, param in model.llm.named_parameters():
            param.requires_grad_("lora_" in name)
    elif mode == "full":
        if model.config.lora is not None:
            raise ConfigError("stage.llm.mode: the model carries LoRA adapters; train them with mode: lora, or "
                              "merge them first (omnilm.lora.merge_lora) to train the whole LLM")
        model.llm.requires_grad_(True)
    for name in ("vision", "audio"):
        if getattr(stage, name).mode == "full":
            part = getattr(model, name)
            if part is None:
                raise ConfigError(f"stage.{name}.mode: the model has no {name} encoder to train")
            part.requires_grad_(True)
    for key, connector in model.connectors.items():
        connector.requires_grad_(stage.connector(key).mode == "full")
    if model.video is not None:
        model.video.requires_grad_(stage.connector(model.config.connector_for("video")).mode == "full")
    for name in ("llm", "vision", "audio"):
        if getattr(stage, name).mode == "full" and name not in model.config.trained_parts:
            model.config.trained_parts.append(name)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if trainable == 0:
        raise ConfigError("stage: every part is frozen; set at least one of stage.connectors / llm / vision / audio "
                          "to full (or llm to lora)")
    total = sum(p.numel() for p in model.parameters())
    logger.info("stage %s: training %s of %s parameters (%.2f%%)", stage.name, f"{trainable:,}", f"{total:,}",
                100 * trainable / total)


def part_of(name: str, model: OmniModel) -> str:
    """Stage key of a parameter name: llm, vision, audio or connectors.<modality>."""
    head = name.split(".", 1)[0]
    if head == "connectors":
        return f"connectors.{name.split('.')[1]}"
    if head == "video":
        return f"connectors.{model.config.connector_for('video')}"
    return head


def param_groups(model: nn.Module, stage: StageSection, optim: OptimSection,
                 part: Callable[[str], str] | None = None) -> list[dict[str, Any]]:
    """AdamW groups per part with its lr; weight decay on matrices only (not biases or norms).

    `part` maps a parameter name to its stage key (default: an OmniModel's `part_of`)."""
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        part_name = part(name) if part is not None else part_of(name, model)
        settings = _part_settings(stage, part_name)
        decay = param.ndim >= 2 and settings.weight_decay > 0
        group = groups.setdefault((part_name, decay), {
            "params": [], "part": part_name,
            "lr": optim.lr if settings.lr is None else settings.lr,
            "weight_decay": settings.weight_decay if decay else 0.0,
        })
        group["params"].append(param)
    return list(groups.values())


def _part_settings(stage: StageSection, part: str) -> PartStage:
    if part.startswith("connectors."):
        return stage.connector(part.split(".", 1)[1])
    return getattr(stage, part)


def set_train_mode(model: nn.Module, parts: list[nn.Module | None]) -> None:
    """Train mode, but eval mode (no dropout) for each of `parts` whose weights are all frozen."""
    model.train()
    for part in parts:
        if part is not None and not any(p.requires_grad for p in part.parameters()):
            part.eval()


def enable_gradient_checkpointing(model: OmniModel, stage: StageSection) -> None:
    """Recompute activations in backward for the LLM (and encoders trained in full)."""
    _checkpoint_activations(model.llm)
    for name in ("vision", "audio"):
        part = getattr(model, name)
        if part is not None and getattr(stage, name).mode == "full":
            inner = getattr(part, "tower", None) or getattr(part, "encoder", None)
            if getattr(inner, "supports_gradient_checkpointing", False):
                _checkpoint_activations(inner)


def _checkpoint_activations(module: nn.Module) -> None:
    options = {"use_reentrant": False}  # works with frozen inputs (inputs_embeds built outside the LLM)
    if hasattr(module, "activation_checkpointing_enable"):  # transformers >= 5.x name
        module.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        module.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)


def check_qlora_support() -> None:
    """QLoRA needs bitsandbytes' 4-bit CUDA kernels; say so plainly anywhere else."""
    if not torch.cuda.is_available():
        raise ConfigError("stage.llm.mode: qlora needs a CUDA GPU (bitsandbytes 4-bit kernels) and none is available; "
                          "on this machine use mode: lora (same adapters, full-precision base weights)")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("stage.llm.mode: qlora needs bitsandbytes: pip install bitsandbytes") from None


def _quantize_llm(model: OmniModel, base_dir: str | Path | None) -> None:
    """Reload the LLM from its source in 4-bit NF4 and prepare it for k-bit training (keeps LoRA weights)."""
    check_qlora_support()
    import transformers
    from peft import prepare_model_for_kbit_training

    from omnilm.sources import resolve_source

    if "llm" in model.config.trained_parts:
        raise ConfigError("stage.llm.mode: qlora reloads the LLM from its source, but this model's LLM weights were "
                          "trained (trained_parts has llm); use mode: lora")
    adapters = None
    if model.config.lora is not None:
        adapters = {k: v for k, v in model.llm.state_dict().items() if "lora_" in k}
        model.llm = model.llm.get_base_model()
    quantization = transformers.BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    llm = transformers.AutoModelForCausalLM.from_pretrained(
        resolve_source(model.config.llm.source, base_dir), quantization_config=quantization,
        dtype=torch.bfloat16, device_map={"": torch.cuda.current_device()},
        trust_remote_code=model.config.llm.trust_remote_code,
    )
    model.llm = prepare_model_for_kbit_training(llm, use_gradient_checkpointing=False)
    if adapters is not None:
        from omnilm.lora import attach_lora

        settings = model.config.lora
        model.config.lora = None
        attach_lora(model, settings)
        model.llm.load_state_dict(adapters, strict=False)
