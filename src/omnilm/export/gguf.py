"""`omnilm export MODEL OUT --to gguf`: the LLM as a (quantized) GGUF for omnilm's llama.cpp engine.

LoRA adapters are merged into the LLM before conversion; llama.cpp's converter writes a float GGUF and its
quantizer the chosen type. The media parts (encoders, connectors, video embedding) stay PyTorch: they are
saved as an omnilm checkpoint beside the GGUF, with `llamacpp.json` saying what the GGUF must be. `omnilm.load`
on OUT picks the llama.cpp engine.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import tempfile
import time
from pathlib import Path

from omnilm.checkpoint import save_media_parts, write_checkpoint
from omnilm.errors import OmniError
from omnilm.export.weights import llm_dtype_name
from omnilm.generation import eos_token_ids
from omnilm.llamacpp.convert import FLOAT_TYPES, check_quant, convert, convert_lora, quantize
from omnilm.llamacpp.loading import GGUFManifest
from omnilm.llamacpp.native import gguf_facts, require_llama_cpp
from omnilm.model import HEAD_PREFIXES
from omnilm.paths import cache_dir
from omnilm.sources import resolve_source

logger = logging.getLogger(__name__)

GGUF_FILE = "model.gguf"
ADAPTER_FILE = "adapter.gguf"
LORA_MODES = ("merged", "adapter")


def check(lm) -> list[str]:
    """What of `lm` the GGUF export cannot express (empty: it can); the format interface of omnilm.export."""
    mode = lm.config.fusion.mode
    if mode != "embed":
        return [(f"fusion.mode={mode!r} attends to media inside the LLM's layers, which llama.cpp cannot run; "
                 "such a model stays on the PyTorch engine")]
    return []


def export_gguf(model, out: str | Path, *, quant: str = "Q4_K_M", lora: str = "merged") -> Path:
    """Write OUT: the LLM of `model` (an OmniLM or a reference omnilm.load takes) as GGUF + its media parts."""
    from omnilm.lm import OmniLM, load

    quant = check_quant(quant)
    require_llama_cpp()
    lm = model if isinstance(model, OmniLM) else load(model, engine="torch")
    problems = check(lm)
    if problems:
        raise OmniError(f"cannot export {lm.name} to gguf: " + "; ".join(problems))
    started = time.perf_counter()
    out = write(lm, out, quant=quant, lora=lora)
    logger.info("exported %s → %s (%s) in %.0f s", lm.name, out, quant, time.perf_counter() - started)
    return out


def write_llm(lm, target: Path, *, quant: str, chat_template: str | None = None,
              adapter: Path | None = None) -> None:
    """The LLM of `lm` as one GGUF file `target` of type `quant`, with its own tokenizer, and `chat_template` in
    place of the tokenizer's when given. Its LoRA is merged into a copy, or, given `adapter`, written there as a
    llama.cpp LoRA adapter (f16) over the unmerged base in `target`."""
    import transformers

    llm = lm.model.llm
    if adapter is not None and lm.config.lora is None:
        raise OmniError(f"{lm.name} has no LoRA adapter to keep apart; export it with lora='merged'")
    if lm.config.lora is not None:  # a copy, merged or stripped: the caller's model keeps its adapters
        base = copy.deepcopy(llm).merge_and_unload() if adapter is None else copy.deepcopy(llm).unload()
    else:
        base = llm
    with tempfile.TemporaryDirectory(prefix="omnilm-gguf-") as tmp:
        hf_dir = Path(tmp) / "llm"
        base.save_pretrained(hf_dir)
        tokenizer = transformers.AutoTokenizer.from_pretrained(resolve_source(lm.config.llm.source))
        if chat_template is not None:
            tokenizer.chat_template = chat_template
        tokenizer.save_pretrained(hf_dir)
        if quant in FLOAT_TYPES:
            convert(hf_dir, target, outtype=FLOAT_TYPES[quant])
        else:
            floats = Path(tmp) / "llm-float.gguf"
            convert(hf_dir, floats, outtype="bf16" if llm_dtype_name(lm) == "bfloat16" else "f16")
            quantize(floats, target, quant=quant)
        if adapter is not None:
            llm.save_pretrained(Path(tmp) / "adapter")  # PEFT's adapter_config.json + adapter_model.safetensors
            convert_lora(Path(tmp) / "adapter", hf_dir, adapter, outtype="f16")


def write(lm, out: str | Path, *, quant: str = "Q4_K_M", lora: str = "merged") -> Path:
    """Write directory `out` (atomically replaced) for `lm`; the model itself is not modified. `lora`: merged
    (into the LLM before quantization) or adapter (a llama.cpp LoRA GGUF beside the unmerged base)."""
    lc = require_llama_cpp()
    if lora not in LORA_MODES:
        raise OmniError(f"lora={lora!r}: choose one of {', '.join(LORA_MODES)}")
    config = copy.deepcopy(lm.config)
    llm = lm.model.llm

    def write_parts(staging: Path) -> dict:
        target = staging / GGUF_FILE
        write_llm(lm, target, quant=quant, adapter=staging / ADAPTER_FILE if lora == "adapter" else None)
        facts = gguf_facts(target)
        GGUFManifest(
            gguf=GGUF_FILE, quant=quant, architecture=facts["architecture"], n_embd=facts["n_embd"],
            eos_token_ids=sorted(eos_token_ids(llm.generation_config)), source=lm.name,
            lora=ADAPTER_FILE if lora == "adapter" else "merged",
            repetition_penalty=llm.generation_config.repetition_penalty,
            extra={"llama_cpp_python": lc.__version__, "gguf_bytes": target.stat().st_size},
        ).write(staging)
        save_media_parts(lm.model, lm.processor, config, staging)
        config.lora, config.trained_parts = None, []  # the LLM lives in the GGUF; vision/audio in their folders
        return {k: v for k, v in lm.model.head_state_dict().items() if k.startswith(HEAD_PREFIXES)}

    return write_checkpoint(out, config, {}, lm.processor, write_parts)


def cached_export(ref: str, *, quant: str, lora: str = "merged") -> Path:
    """`ref` exported at `quant` once into `$OMNILM_CACHE/gguf/KEY` (KEY: the source, its files' times, quant,
    the LoRA mode)."""
    from omnilm.llamacpp.loading import is_exported

    quant = check_quant(quant)
    source = Path(resolve_source(ref))
    stamp = [str(source.resolve()) if source.exists() else ref, quant, require_llama_cpp().__version__]
    stamp += [] if lora == "merged" else [f"lora:{lora}"]  # merged exports keep their earlier keys
    if source.is_dir():
        stamp += [f"{p.name}:{p.stat().st_mtime_ns}" for p in sorted(source.iterdir()) if p.is_file()]
    key = hashlib.sha256("\n".join(stamp).encode()).hexdigest()[:16]
    out = cache_dir("gguf", key)
    if not is_exported(out):
        logger.info("exporting %s to GGUF (%s, LoRA %s) once, into %s", ref, quant, lora, out)
        export_gguf(ref, out, quant=quant, lora=lora)
    return out
