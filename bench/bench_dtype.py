"""The LLM's weights dtype on this machine: a LoRA training step of Qwen2.5-0.5B in float32, bfloat16 and `auto`.

`dtype: auto` (the quickstart recipes' setting) is bfloat16 where the machine multiplies it natively (a GPU, a CPU
with AMX or AVX512-BF16) and float32 elsewhere. On an AVX2-only CPU PyTorch emulates bfloat16 matrix products;
this section measures what that costs. Each variant loads `pkg:qwen2.5-0.5b-instruct` with LoRA r8 on q/v (the
quickstart's adapters) and runs forward + backward + AdamW on the same batch of 2 × 48 tokens; the variants take
their steps in turn, so load from other processes hits them alike, after one short untimed forward each. The
figure is the median step.

Environment knobs: OMNILM_BENCH_DTYPE_STEPS (timed steps per variant; default 3, or 1 where bfloat16 is emulated:
a step then takes minutes), OMNILM_BENCH_DTYPE_BATCH (rows, default 2; the quickstart trains 8).
"""

from __future__ import annotations

import logging
import os
import statistics
import time

import torch

logger = logging.getLogger(__name__)
TOKENS = 48


def lora_llm(dtype: str):
    """Qwen2.5-0.5B in ``dtype`` (a config name) with the quickstart's LoRA, and its optimizer."""
    import peft
    import transformers

    from omnilm.config import torch_dtype
    from omnilm.sources import resolve_source

    llm = transformers.AutoModelForCausalLM.from_pretrained(resolve_source("pkg:qwen2.5-0.5b-instruct"),
                                                            dtype=torch_dtype(dtype))
    llm = peft.get_peft_model(llm, peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    return llm, torch.optim.AdamW([p for p in llm.parameters() if p.requires_grad], lr=1e-4)


def run() -> dict:
    from omnilm.config import dtype_name, native_bfloat16, torch_dtype

    steps = int(os.environ.get("OMNILM_BENCH_DTYPE_STEPS", "3" if native_bfloat16() else "1"))
    batch = int(os.environ.get("OMNILM_BENCH_DTYPE_BATCH", "2"))
    ids = torch.randint(0, 150_000, (batch, TOKENS), generator=torch.Generator().manual_seed(0))
    variants = {name: lora_llm(name) for name in ("float32", "bfloat16", "auto")}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for llm, _ in variants.values():  # warm-up, untimed
        with torch.no_grad():
            llm(input_ids=ids[:1, :8])
    for step in range(steps):
        for name, (llm, optimizer) in variants.items():
            start = time.perf_counter()
            llm(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            seconds[name].append(time.perf_counter() - start)
            logger.info("dtype %s step %d: %.2f s", name, step, seconds[name][-1])
    median = {name: round(statistics.median(s), 3) for name, s in seconds.items()}
    return {"native_bfloat16": native_bfloat16(), "auto_is": dtype_name(torch_dtype("auto")),
            "lora_step_s": median, "bfloat16_over_float32": round(median["bfloat16"] / median["float32"], 2),
            "batch": [batch, TOKENS], "steps": steps}
