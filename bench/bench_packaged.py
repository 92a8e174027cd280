"""Packaged models: cold conversion and warm-cache load (time, peak RSS) per model; Qwen decode speed.

Every measurement runs in its own subprocess, so peak RSS is that model's alone. Cold conversion goes into a
fresh temporary OMNILM_CACHE (the user's cache is untouched) and the warm loads then read that same cache.
`OMNILM_BENCH_COLD=0` skips the cold conversions (about 3 minutes on 2 cores, mostly Qwen and Gemma) and
measures warm loads from the user's cache instead.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time

logger = logging.getLogger(__name__)

NEW_TOKENS = 64
QWEN = "qwen2.5-0.5b-instruct"


def _peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def _load(name: str):
    """Load model and its tokenizer/processor the way a user would; returns (model, preprocessor)."""
    from transformers import (
        AutoImageProcessor,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSpeechSeq2Seq,
        AutoProcessor,
        AutoTokenizer,
    )

    from omnilm.packaged import get_spec, resolve

    path = resolve(f"pkg:{name}")
    model_cls, pre_cls = {
        "llm": (AutoModelForCausalLM, AutoTokenizer),
        "audio": (AutoModelForSpeechSeq2Seq, AutoProcessor),
        "vision": (AutoModel, AutoImageProcessor),
        "text": (AutoModel, AutoTokenizer),
    }[get_spec(name).kind]
    return model_cls.from_pretrained(path), pre_cls.from_pretrained(path)


def _decode_tokens_per_s(model, tokenizer) -> float:
    """Greedy decode speed of the bare transformers `generate` (prompt prefill included, 64 new tokens)."""
    import torch

    messages = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    gen = {"do_sample": False, "min_new_tokens": NEW_TOKENS, "max_new_tokens": NEW_TOKENS}
    with torch.inference_mode():
        model.generate(**ids, **{**gen, "min_new_tokens": 4, "max_new_tokens": 4})  # warm-up
        start = time.perf_counter()
        out = model.generate(**ids, **gen)
        seconds = time.perf_counter() - start
    return round((out.shape[1] - ids["input_ids"].shape[1]) / seconds, 2)


def _child(name: str, mode: str) -> dict:
    """One measurement, in this (fresh) process."""
    from omnilm.packaged import resolve

    start = time.perf_counter()
    if mode == "cold":
        resolve(f"pkg:{name}")
        return {"seconds": round(time.perf_counter() - start, 2), "peak_rss_mb": _peak_rss_mb()}
    model, preprocessor = _load(name)
    result = {"seconds": round(time.perf_counter() - start, 2), "peak_rss_mb": _peak_rss_mb()}
    if mode == "decode":
        result["tokens_per_s"] = _decode_tokens_per_s(model.eval(), preprocessor)
    return result


def _measure(name: str, mode: str, cache: str | None) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if cache:
        env["OMNILM_CACHE"] = cache
    done = subprocess.run(
        [sys.executable, __file__, "--child", name, mode], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench child {name} {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run() -> dict:
    from omnilm.packaged import PACKAGED

    cold = os.environ.get("OMNILM_BENCH_COLD", "1") != "0"
    results: dict = {"models": {}}
    with tempfile.TemporaryDirectory(prefix="omnilm-bench-cache-") as tmp:
        cache = tmp if cold else None
        for name in PACKAGED:
            row = {}
            if cold:
                logger.info("cold conversion of pkg:%s", name)
                c = _measure(name, "cold", cache)
                row |= {"cold_convert_s": c["seconds"], "cold_peak_rss_mb": c["peak_rss_mb"]}
            logger.info("warm load of pkg:%s", name)
            w = _measure(name, "warm", cache)
            row |= {"warm_load_s": w["seconds"], "warm_peak_rss_mb": w["peak_rss_mb"]}
            results["models"][name] = row
        logger.info("decode speed of pkg:%s (bare transformers generate)", QWEN)
        d = _measure(QWEN, "decode", cache)
    results["qwen_decode_tokens_per_s_bare_generate"] = d["tokens_per_s"]
    results["decode_new_tokens"] = NEW_TOKENS
    results["cold_measured"] = cold
    return results


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        logging.disable(logging.WARNING)
        print(json.dumps(_child(sys.argv[2], sys.argv[3])))
    else:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        print(json.dumps(run(), indent=2))
