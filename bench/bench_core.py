"""Foundation benchmark: omnilm's generate vs the bare LLM's, time to first token with an image, peak RSS.

Two models: the tiny test model, and a small Qwen2-shaped LLM (≈ 30 M parameters) built locally.
"""

from __future__ import annotations

import resource
import statistics
import time

import torch

from omnilm.testing import tiny_model

NEW_TOKENS = 64
REPEATS = 5


def _small_lm():
    """The tiny model with its LLM swapped for a wider, deeper random Qwen2 (same tokenizer)."""
    import transformers

    lm = tiny_model(("image",))
    config = transformers.Qwen2Config(
        vocab_size=lm.model.llm.config.vocab_size, hidden_size=512, intermediate_size=1536, num_hidden_layers=6,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048, tie_word_embeddings=True,
        eos_token_id=lm.model.llm.config.eos_token_id,
    )
    torch.manual_seed(0)
    lm.model.llm = transformers.Qwen2ForCausalLM(config).eval()
    lm.model.llm.generation_config = transformers.GenerationConfig(eos_token_id=config.eos_token_id)
    lm.model.connectors["image"] = type(lm.model.connectors["image"])(in_dim=32, out_dim=512)
    return lm


def _median_seconds(*fns) -> list[float]:
    """Median wall time of each function, run interleaved so that both see the same machine load."""
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(REPEATS):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def measure(lm, new_tokens: int = NEW_TOKENS) -> dict:
    from omnilm.testing import make_shape_image

    prompt = "Describe a red circle on a white background in detail."
    inputs = lm.processor(prompt)
    fixed = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens}

    def omni():
        lm.generate(prompt, **fixed)

    def bare():
        with torch.no_grad():
            lm.model.llm.generate(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], do_sample=False,
                pad_token_id=lm.processor.tokenizer.pad_token_id, **fixed,
            )

    omni_s, bare_s = _median_seconds(omni, bare)
    result = {
        "parameters_m": round(sum(p.numel() for p in lm.model.parameters()) / 1e6, 2),
        "omnilm_decode_tokens_per_s": round(new_tokens / omni_s, 2),
        "bare_llm_decode_tokens_per_s": round(new_tokens / bare_s, 2),
        "ratio_omnilm_over_bare": round(bare_s / omni_s, 3),
        "target_ratio": 0.95,
    }
    if "image" in lm.modalities:
        image = make_shape_image()
        (ttft,) = _median_seconds(lambda: lm.generate("<image> What is this?", images=[image], max_new_tokens=1))
        result["time_to_first_token_with_image_ms"] = round(ttft * 1000, 1)
    return result


def _packaged_qwen():
    """Qwen2.5-0.5B-Instruct through omnilm.load, if its packages are installed (else None)."""
    from omnilm import load
    from omnilm.packaged import is_cached, is_installed

    ref = "pkg:qwen2.5-0.5b-instruct"
    return load(ref) if is_cached(ref) or is_installed(ref) else None


def run() -> dict:
    torch.manual_seed(0)
    out = {"tiny": measure(tiny_model(("image",))), "small_qwen2": measure(_small_lm())}
    qwen = _packaged_qwen()
    out["qwen2.5-0.5b-instruct"] = measure(qwen, new_tokens=16) if qwen else "skipped: packages not installed"
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out
