"""Load test of `omnilm serve` on loopback: 16 concurrent clients vs the same requests one at a time.

Uses the tiny random model (`omnilm.testing.tiny_model`), so the figures measure the server and its
dynamic batching, not a real model's speed. Every request generates exactly `TOKENS` tokens
(`ignore_eos`), half of them with an image, so both runs do the same work.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import httpx
from PIL import Image

from omnilm.serve import ServeSettings, create_app
from omnilm.serve.background import BackgroundServer
from omnilm.testing import tiny_model
from loadgen import latency_summary, run_threads

CLIENTS = 16
REQUESTS = 32
TOKENS = 16
TARGET_SPEEDUP = 2.0


def _requests() -> list[dict]:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "teal").save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    bodies = []
    for i in range(REQUESTS):
        content = [{"type": "text", "text": f"Question {i}: what colour is the shape?"}]
        if i % 2:
            content.insert(0, {"type": "image_url", "image_url": {"url": url}})
        bodies.append({"messages": [{"role": "user", "content": content}], "max_tokens": TOKENS, "ignore_eos": True})
    return bodies


def _send(client: httpx.Client, body: dict, latencies: list[float], errors: list[str]) -> None:
    start = time.perf_counter()
    try:
        response = client.post("/v1/chat/completions", json=body)
        if response.status_code != 200 or response.json()["usage"]["completion_tokens"] != TOKENS:
            errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
    except httpx.HTTPError as err:
        errors.append(repr(err))
    latencies.append(time.perf_counter() - start)


def _load(url: str, bodies: list[dict], clients: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    work = iter(bodies)
    lock = threading.Lock()

    def client_loop() -> None:
        with httpx.Client(base_url=url, timeout=300) as client:
            while True:
                with lock:
                    body = next(work, None)
                if body is None:
                    return
                _send(client, body, latencies, errors)

    elapsed = run_threads(client_loop, (() for _ in range(clients)))
    summary = latency_summary(latencies, digits=4)
    return {
        "clients": clients,
        "requests": len(bodies),
        "seconds": round(elapsed, 3),
        "requests_per_s": round(len(bodies) / elapsed, 2),
        "tokens_per_s": round(len(bodies) * TOKENS / elapsed, 1),
        "latency_p50_s": summary["p50_s"],
        "latency_p95_s": summary["p95_s"],
        "errors": len(errors),
        "error_samples": errors[:3],
    }


def run() -> dict:
    lm = tiny_model(("image",))
    bodies = _requests()
    with BackgroundServer(create_app(lm, ServeSettings(max_batch_size=CLIENTS, max_tokens=TOKENS))) as server:
        _load(server.url, bodies[:4], 1)  # warm-up
        sequential = _load(server.url, bodies, 1)
        concurrent = _load(server.url, bodies, CLIENTS)
        batches = server.app.state.scheduler.largest_batch
    speedup = concurrent["requests_per_s"] / sequential["requests_per_s"]
    return {
        "serve": {
            "model": "omnilm.testing.tiny_model(('image',)) — random tiny model, measures the server only",
            "tokens_per_request": TOKENS,
            "sequential": sequential,
            "concurrent": concurrent,
            "speedup": round(speedup, 2),
            "target_speedup": TARGET_SPEEDUP,
            "meets_target": speedup >= TARGET_SPEEDUP and concurrent["errors"] == 0 and sequential["errors"] == 0,
            "largest_batch": batches,
        }
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
