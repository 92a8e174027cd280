"""Load generation shared by the server benchmarks: run clients in threads, summarise their latencies."""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Iterable


def run_threads(target: Callable[..., None], args: Iterable[tuple]) -> float:
    """Run `target(*a)` for each `a` in its own thread, all at once; the seconds until the last one ends."""
    start = time.perf_counter()
    threads = [threading.Thread(target=target, args=a) for a in args]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def latency_summary(latencies: list[float], digits: int = 3) -> dict[str, float]:
    """p50 (median) and p95 (nearest rank) of `latencies`, in seconds."""
    ordered = sorted(latencies)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    return {"p50_s": round(statistics.median(ordered), digits), "p95_s": round(p95, digits)}
