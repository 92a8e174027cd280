"""The llama.cpp engine against PyTorch and raw llama.cpp: decode speed, time to first token, accuracy, server load.

Model: the quickstart's shape (DINOv2-S avg-pooled + MLP + Qwen2.5-0.5B-Instruct bf16, Whisper-base transcribing
speech) built from the packaged parts, plus 4-frame video; exported once to GGUF Q4_K_M. Every figure is measured
interleaved with its reference in this run (the machine may be shared: read the ratios). Accuracy uses the trained
quickstart model (`$OMNILM_QUICKSTART_MODEL`, default runs/quickstart/model) when it exists, else says so.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

REPEATS = 3
NEW_TOKENS = 32
CLIENTS = 16
PARTS = os.environ.get("OMNILM_LLAMACPP_PARTS", "ttft,decode,server,accuracy").split(",")  # a subset, to rerun one
SERVER_TOKENS = 32
TEXT_PROMPT = "What is the capital of France?"  # 18 tokens with Qwen's chat template and an empty system turn
EVAL_LIMITS = {"typed": int(os.environ.get("OMNILM_BENCH_EVAL_LIMIT", "200")),
               "spoken": int(os.environ.get("OMNILM_BENCH_SPOKEN_LIMIT", "48"))}  # Whisper's time, the same for all


def _median_seconds(fns: dict, repeats: int = REPEATS) -> dict[str, float]:
    """Median wall time of each function, run interleaved (round-robin) after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _models(tmp: Path):
    import omnilm
    from omnilm import OmniLM
    from omnilm.config import VideoConfig
    from omnilm.export.gguf import export_gguf
    from omnilm.quickstart import load_recipe
    from omnilm.training.build import model_config

    config = model_config(load_recipe().train.model)
    config.video = VideoConfig(num_frames=4, temporal_pool=2)
    torch.manual_seed(0)
    torch_lm = OmniLM.from_config(config, name="quickstart-shaped")
    started = time.perf_counter()
    export_gguf(torch_lm, tmp / "q4", quant="Q4_K_M")
    export_seconds = time.perf_counter() - started
    return torch_lm, omnilm.load(tmp / "q4", n_seq=CLIENTS), export_seconds


def _media(tmp: Path) -> dict[str, list]:
    import shutil
    import subprocess

    from omnilm.testing import make_shape_image, make_video

    image = make_shape_image("red")
    media = {
        "text": [{"type": "text", "text": TEXT_PROMPT}],
        "image": [{"type": "image", "image": image}, {"type": "text", "text": "What color is the shape?"}],
        "video": [{"type": "video", "video": str(make_video(tmp / "clip.mp4", frames=8))},
                  {"type": "text", "text": "What moves?"}],
    }
    if shutil.which("espeak-ng"):  # image + spoken question: Whisper transcribes, then the LLM reads it
        speech = tmp / "question.wav"
        subprocess.run(["espeak-ng", "-w", str(speech), "What color is the shape?"], check=True, capture_output=True)
        media["audio"] = [{"type": "image", "image": image}, {"type": "audio", "audio": str(speech)}]
    return media


def time_to_first_token(torch_lm, cpp_lm, media: dict) -> dict:
    out = {}
    for kind, content in media.items():
        messages = [{"role": "user", "content": content}]
        times = _median_seconds({"torch": lambda m=messages: torch_lm.chat(m, max_new_tokens=1),
                                 "llama.cpp": lambda m=messages: cpp_lm.chat(m, max_new_tokens=1)})
        out[kind] = {name: round(seconds * 1000, 1) for name, seconds in times.items()}
    out["prompt_tokens_text"] = int(torch_lm.processor([[{"role": "user", "content": TEXT_PROMPT}]])["input_ids"].shape[1])
    out["unit"] = "ms, lm.chat(max_new_tokens=1), median of 3 interleaved"
    out["targets_ms"] = {"text": {"torch": 200, "llama.cpp": 100}, "image": {"torch": 250, "llama.cpp": 150}}
    return out


def decode_speed(torch_lm, cpp_lm, gguf: Path) -> dict:
    """Tokens/s of the decode alone: (T(N tokens) − T(1 token)) / (N − 1), each path, interleaved."""
    import llama_cpp

    messages = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]
    ids = torch_lm.processor([messages])
    raw = llama_cpp.Llama(str(gguf), n_ctx=2048, n_threads=len(os.sched_getaffinity(0)), verbose=False)
    prompt = ids["input_ids"][0].tolist()
    eos = raw.token_eos()

    def raw_generate(n: int) -> None:
        raw.reset()
        ban = llama_cpp.LogitsProcessorList([_ban(eos)])
        for i, _ in enumerate(raw.generate(prompt, temp=0.0, logits_processor=ban)):
            if i + 1 == n:
                break

    def bare(n: int) -> None:
        with torch.no_grad():
            torch_lm.model.llm.generate(**ids, do_sample=False, max_new_tokens=n, min_new_tokens=n,
                                        pad_token_id=torch_lm.processor.tokenizer.pad_token_id)

    paths = {
        "omnilm_llama.cpp_q4_k_m": lambda n: cpp_lm.chat(messages, max_new_tokens=n, ignore_eos=True),
        "raw_llama.cpp_q4_k_m": raw_generate,
        "omnilm_torch_bf16": lambda n: torch_lm.chat(messages, max_new_tokens=n, ignore_eos=True),
        "bare_transformers_bf16": bare,
    }
    fns = {f"{name}@{n}": (lambda f=fn, k=n: f(k)) for name, fn in paths.items() for n in (1, NEW_TOKENS)}
    times = _median_seconds(fns)
    rates = {name: round((NEW_TOKENS - 1) / max(1e-9, times[f"{name}@{NEW_TOKENS}"] - times[f"{name}@1"]), 2)
             for name in paths}
    raw.close()
    return {
        "tokens_per_s": rates,
        "ratio_engine_over_raw_llama.cpp": round(rates["omnilm_llama.cpp_q4_k_m"] / rates["raw_llama.cpp_q4_k_m"], 3),
        "ratio_engine_over_torch": round(rates["omnilm_llama.cpp_q4_k_m"] / rates["omnilm_torch_bf16"], 3),
        "ratio_torch_over_bare_transformers": round(rates["omnilm_torch_bf16"] / rates["bare_transformers_bf16"], 3),
        "targets": {"engine_over_raw": 0.9, "engine_over_torch": 2.5, "torch_over_bare": 0.95},
        "new_tokens": NEW_TOKENS,
        **_bandwidth_bound(gguf, rates["omnilm_llama.cpp_q4_k_m"]),
    }


def _ban(token: int):
    def processor(_ids, logits):  # generate exactly N tokens: the end-of-sequence token is never chosen
        logits[token] = -np.inf
        return logits

    return processor


def _bandwidth_bound(gguf: Path, measured: float) -> dict:
    """Bytes read per token (every weight once; one row of the token embedding) ÷ measured copy bandwidth."""
    import gguf as gguf_lib

    reader = gguf_lib.GGUFReader(str(gguf))
    per_token = sum(int(t.n_bytes) for t in reader.tensors if t.name != "token_embd.weight")
    block = np.ones(256 * 2**20 // 8)  # 256 MiB, far beyond the caches
    target = np.empty_like(block)
    np.copyto(target, block)
    start = time.perf_counter()
    for _ in range(4):
        np.copyto(target, block)
    bandwidth = 4 * 2 * block.nbytes / (time.perf_counter() - start)  # read + write
    bound = bandwidth / per_token
    return {"bytes_per_token_mb": round(per_token / 2**20, 1), "copy_bandwidth_gb_s": round(bandwidth / 1e9, 2),
            "bandwidth_bound_tokens_per_s": round(bound, 1), "fraction_of_bound": round(measured / bound, 3)}


def server_load(cpp_lm) -> dict:
    """16 concurrent clients vs the same 16 requests one at a time, on the llama.cpp engine."""
    import httpx

    from omnilm.serve import ServeSettings, create_app
    from omnilm.serve.background import BackgroundServer

    bodies = [{"messages": [{"role": "user", "content": f"Question {i}: tell me about the sea."}],
               "max_tokens": SERVER_TOKENS, "ignore_eos": True} for i in range(CLIENTS)]
    errors: list[str] = []

    def send(client, body) -> None:
        response = client.post("/v1/chat/completions", json=body)
        if response.status_code != 200 or response.json()["usage"]["completion_tokens"] != SERVER_TOKENS:
            errors.append(f"HTTP {response.status_code}: {response.text[:200]}")

    with BackgroundServer(create_app(cpp_lm, ServeSettings(max_tokens=SERVER_TOKENS))) as server, \
            httpx.Client(base_url=server.url, timeout=600) as client:
        send(client, bodies[0])  # warm-up
        start = time.perf_counter()
        for body in bodies:
            send(client, body)
        sequential = time.perf_counter() - start
        threads = [threading.Thread(target=send, args=(client, body)) for body in bodies]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        concurrent = time.perf_counter() - start
        largest = server.app.state.scheduler.largest_batch
    return {"clients": CLIENTS, "tokens_each": SERVER_TOKENS, "sequential_s": round(sequential, 2),
            "concurrent_s": round(concurrent, 2), "speedup": round(sequential / concurrent, 2), "target_speedup": 2.0,
            "errors": len(errors), "largest_batch": largest}


def accuracy() -> dict:
    """The quickstart's typed and spoken easy-VQA through PyTorch, llama.cpp Q8_0 and Q4_K_M (same items), and
    Q4_K_M with the LoRA kept as a llama.cpp adapter (f16) instead of merged before quantization; file sizes."""
    import dataclasses

    import omnilm
    from omnilm.evaluation import evaluate
    from omnilm.evaluation.tasks import load_task
    from omnilm.export.gguf import cached_export
    from omnilm.quickstart import load_recipe

    model = Path(os.environ.get("OMNILM_QUICKSTART_MODEL", "runs/quickstart/model"))
    data = model.parent / "data"
    if not (model / "omnilm.json").is_file() or not data.is_dir():
        return {"skipped": f"no trained quickstart model at {model} (make demo writes one; or set "
                           "OMNILM_QUICKSTART_MODEL)"}
    instruction = load_recipe().answer_suffix
    exports = {f"llama.cpp_{q.lower()}": (q, "merged") for q in ("Q8_0", "Q4_K_M")}
    exports["llama.cpp_q4_k_m_adapter"] = ("Q4_K_M", "adapter")
    engines = {"torch_bf16": lambda: omnilm.load(model)}
    sizes = {}
    for name, (quant, lora) in exports.items():
        directory = cached_export(str(model), quant=quant, lora=lora)
        engines[name] = lambda d=directory: omnilm.load(d)
        sizes[name] = {f.name: round(f.stat().st_size / 2**20, 2) for f in directory.glob("*.gguf")}
    out: dict = {"model": str(model), "limits": EVAL_LIMITS, "gguf_mb": sizes}
    with tempfile.TemporaryDirectory(prefix="omnilm-bench-eval-") as tmp:
        for name, open_model in engines.items():
            lm = open_model()
            for kind, task_name in (("typed", "easy-vqa"), ("spoken", "easy-vqa-spoken")):
                task = dataclasses.replace(load_task(task_name), data=data / f"eval-{kind}.jsonl", dataset=None)
                if kind == "spoken":
                    task = dataclasses.replace(task, prompt=instruction)
                result = evaluate(lm, task, Path(tmp) / name / kind, batch_size=16, limit=EVAL_LIMITS[kind],
                                  progress=False)
                out.setdefault(kind, {})[name] = {"accuracy": round(result["metrics"]["vqa_accuracy"] * 100, 1),
                                                  "seconds": round(result["generation_seconds"], 1)}
            del lm
    for kind in ("typed", "spoken"):
        base = out[kind]["torch_bf16"]["accuracy"]
        out[kind]["points_vs_torch"] = {n: round(r["accuracy"] - base, 1) for n, r in out[kind].items()
                                        if n != "torch_bf16"}
    out["targets_points"] = {"q8_0": -1.0, "q4_k_m": -2.0}
    return out


def _logged(name: str, result: dict) -> dict:
    logger.info("%s: %s", name, json.dumps(result))  # each section as it ends: a long run shows its progress
    return result


def run() -> dict:
    logging.getLogger("omnilm.llamacpp.native.llama").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="omnilm-bench-llamacpp-") as tmp:
        tmp = Path(tmp)
        torch_lm, cpp_lm, export_seconds = _models(tmp)
        results = {"model": "quickstart-shaped, packaged parts (untrained connectors), + 4-frame video",
                   "export_q4_k_m_s": round(export_seconds, 1), "threads": len(os.sched_getaffinity(0)),
                   "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                   "load_average_1min_at_start": round(os.getloadavg()[0], 2)}
        if "ttft" in PARTS:
            results["ttft"] = _logged("ttft", time_to_first_token(torch_lm, cpp_lm, _media(tmp)))
        if "decode" in PARTS:
            results["decode"] = _logged("decode", decode_speed(torch_lm, cpp_lm, tmp / "q4" / "model.gguf"))
        if "server" in PARTS:
            results["server"] = _logged("server", server_load(cpp_lm))
        del torch_lm
        cpp_lm.close()
    if "accuracy" in PARTS:
        results["accuracy"] = _logged("accuracy", accuracy())
    results["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(json.dumps(run(), indent=2))
