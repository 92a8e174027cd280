"""GGUF → transformers checkpoint, through transformers' own `gguf_file=` loader.

The GGUF is dequantized once (needs `gguf` and `accelerate`; for Qwen2.5-0.5B about 75 s and 3.8 GB on two
cores) and saved as bf16 safetensors with its tokenizer (chat template included when the GGUF has one)
and generation config, so that later loads are plain `from_pretrained` calls of a few seconds.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

def _drop_quantization(model) -> None:
    """Make a dequantized GGUF model an ordinary one: `save_pretrained` refuses while the marker is set."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _fix_generation_config(model, tokenizer) -> None:
    """Stop on the tokenizer's end-of-turn token as well as the model's EOS (chat models end turns with it)."""
    gen = model.generation_config
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    eos = [e for e in eos if e is not None]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
        eos.append(tokenizer.eos_token_id)
    gen.eos_token_id = eos[0] if len(eos) == 1 else eos
    if gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]


def convert(inputs: dict[str, Path], out: Path) -> None:
    """Dequantize `inputs["model.gguf"]` and save model, tokenizer and generation config into `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf_path = inputs["model.gguf"]
    folder, name = str(gguf_path.parent), gguf_path.name
    logger.info("Reading the tokenizer from %s", gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    logger.info("Dequantizing %s to bf16", gguf_path)
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        gguf_file=name,
        dtype=torch.bfloat16,
        quantization_config=GgufConfig(dequantize=True),  # plain nn.Linear weights, savable
    )
    _drop_quantization(model)
    _fix_generation_config(model, tokenizer)
    model.config.name_or_path = ""  # do not record the temporary directory
    model.save_pretrained(out)
    del model
    tokenizer.save_pretrained(out)
