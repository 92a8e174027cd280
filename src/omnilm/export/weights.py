"""Weights as another layout wants them: the LLM with its LoRA adapters merged (without touching the model),
and renamed state dicts loaded into a target module built on the meta device (no second copy in memory)."""

from __future__ import annotations

import torch
from torch import nn

from omnilm.config import dtype_name


def plain_llm(llm: nn.Module) -> nn.Module:
    """The transformers causal LM under `llm` (a PEFT model or already a plain one); its config is the export's."""
    from peft import PeftModel

    return llm.get_base_model() if isinstance(llm, PeftModel) else llm


def merged_llm(llm: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The plain causal LM under `llm` and its state dict with every active LoRA adapter folded in.

    `llm` (a PEFT model or a plain transformers model) is left as it is: merged tensors are new ones.
    """
    from peft.tuners.lora import LoraLayer

    base = plain_llm(llm)
    if base is llm:
        return llm, dict(llm.state_dict())
    deltas = {}
    for name, module in base.named_modules():
        adapters = [a for a in module.active_adapters if a in module.lora_A] if isinstance(module, LoraLayer) else []
        if adapters:
            with torch.no_grad():
                deltas[f"{name}.weight"] = sum(module.get_delta_weight(a) for a in adapters)  # (out, in)
    state = {}
    for key, tensor in base.state_dict().items():
        if "lora_" in key:
            continue
        key = key.replace(".base_layer.", ".")
        state[key] = tensor + deltas[key].to(tensor.dtype) if key in deltas else tensor
    return base, state


def load_into_meta(build, state: dict[str, torch.Tensor]) -> nn.Module:
    """`build()` constructed on the meta device, then given `state`'s tensors (the same storage, not copies).

    The state must match the module's parameters and buffers exactly (names and shapes); tied weights may be
    given once or twice."""
    with torch.device("meta"):
        module = build()
    expected = set(module.state_dict())
    missing = expected - set(state)
    unexpected = set(state) - expected
    if missing or unexpected:
        raise RuntimeError(f"exported weights do not match the target layout: missing {sorted(missing)[:5]}, "
                           f"unexpected {sorted(unexpected)[:5]}")
    module.load_state_dict(state, strict=True, assign=True)
    if hasattr(module, "tie_weights"):
        module.tie_weights()
    return module.eval()


PAD_MULTIPLE = 64  # embedding rows added for a media token are padded to a multiple of this


def padded_rows(rows: int, token_id: int) -> int:
    """Embedding rows an exported LLM needs so that media token `token_id` has one.

    omnilm never embeds a placeholder id, so it may lie past the LLM's rows (Qwen's tokenizer fills them);
    Llava and Ultravox embed it before replacing it, so the table grows to a multiple of 64 past it (zero
    rows, whose ids generation suppresses), as llava-hf's checkpoints pad theirs."""
    return rows if token_id < rows else -(-(token_id + 1) // PAD_MULTIPLE) * PAD_MULTIPLE


def pad_vocab(base: nn.Module, state: dict[str, torch.Tensor], rows: int) -> dict[str, torch.Tensor]:
    """`state` (of causal LM `base`) with its embedding table and LM head grown to `rows` by zero rows."""
    tables = {id(p) for p in (base.get_input_embeddings().weight, getattr(base.get_output_embeddings(), "weight", None))}
    names = {name for name, p in base.named_parameters(remove_duplicate=False) if id(p) in tables}
    return {k: torch.cat([t, t.new_zeros(rows - t.shape[0], t.shape[1])]) if k in names and rows > t.shape[0] else t
            for k, t in state.items()}  # (V, D) → (V', D)


def llm_dtype_name(lm) -> str:
    """The dtype the loaded LLM of ``lm`` has (``auto`` resolved on this machine), as a config dtype name."""
    return dtype_name(lm.model.llm.get_input_embeddings().weight.dtype)
