"""GET /metrics in the Prometheus text format (prometheus_client), one registry per app.

Requests by endpoint and status, queue depth, batch sizes, time to first token, time per output token,
generated tokens (and tokens/s over the last 10 s), media-cache hits and misses.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
PER_TOKEN = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 1, 2, 5)
WINDOW = 10.0  # seconds of tokens behind the tokens/s gauge


class ServerMetrics:
    """The server's instruments; `observe_choice` is called from the scheduler's thread (thread-safe)."""

    def __init__(self, *, queue_depth, media_cache=None) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("omnilm_requests", "HTTP requests answered", ["endpoint", "status"], registry=registry)
        Gauge("omnilm_queue_depth", "requests waiting for the model", registry=registry).set_function(queue_depth)
        self.batch_size = Histogram("omnilm_batch_size", "rows decoded together in one generation step",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=registry)
        self.ttft = Histogram("omnilm_time_to_first_token_seconds", "arrival to first generated text",
                              buckets=LATENCY, registry=registry)
        self.per_token = Histogram("omnilm_time_per_output_token_seconds", "decode time per token after the first",
                                   buckets=PER_TOKEN, registry=registry)
        self.tokens = Counter("omnilm_generated_tokens", "tokens generated", registry=registry)
        Gauge("omnilm_tokens_per_second", f"tokens generated per second over the last {WINDOW:.0f} s",
              registry=registry).set_function(self.tokens_per_second)
        self._recent: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()
        if media_cache is not None:
            Gauge("omnilm_media_cache_hits", "media items found encoded", registry=registry).set_function(
                lambda: media_cache.hits)
            Gauge("omnilm_media_cache_misses", "media items encoded", registry=registry).set_function(
                lambda: media_cache.misses)
            Gauge("omnilm_media_cache_hit_rate", "hits / lookups", registry=registry).set_function(
                lambda: media_cache.hit_rate)
            Gauge("omnilm_media_cache_bytes", "feature bytes held", registry=registry).set_function(
                lambda: media_cache.held_bytes)

    def observe_choice(self, *, arrived: float, first: float | None, done: float, tokens: int) -> None:
        if first is not None:
            self.ttft.observe(first - arrived)
            if tokens > 1:
                self.per_token.observe((done - first) / (tokens - 1))
        self.tokens.inc(tokens)
        with self._lock:
            self._recent.append((done, tokens))

    def tokens_per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._recent and self._recent[0][0] < now - WINDOW:
                self._recent.popleft()
            return sum(n for _, n in self._recent) / WINDOW

    def install(self, app: FastAPI, auth: list) -> None:
        """Count every answered request by its route and status; serve GET /metrics behind the API key."""

        @app.middleware("http")
        async def count(request: Request, call_next):
            response = await call_next(request)
            route = getattr(request.scope.get("route"), "path", "unrouted")
            if route != "/metrics":
                self.requests.labels(route, str(response.status_code)).inc()
            return response

        @app.get("/metrics", dependencies=auth)
        async def metrics() -> Response:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
