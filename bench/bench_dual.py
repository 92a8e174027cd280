"""Dual-encoder benchmark: images/s while indexing; query latency of the HNSW graph (FAISS) vs exact numpy
search at 1k and 100k vectors, measured in the same run on the same vectors, with the graph's recall@10.

Indexing uses the packaged towers (`pkg:dinov2-small` at 56 px + `pkg:minilm-l6`, the recipe of
docs/dual_encoder.md) when they are installed, else the tiny test towers (the result says which).
Search vectors are synthetic: 256-d unit vectors drawn around 1,000 cluster centres, like embeddings of
a photo collection (uniformly random vectors are a worst case no real index sees).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from omnilm.dual.ann import FaissHNSW, exact_search

logger = logging.getLogger(__name__)

DIM = 256
SIZES = (1_000, 100_000)
QUERIES = 200
K = 10
INDEX_IMAGES = 96


def _model():
    from omnilm.dual import DualEncoder, DualEncoderConfig

    try:
        config = DualEncoderConfig(vision={"source": "pkg:dinov2-small", "image_size": 56},
                                   text={"source": "pkg:minilm-l6"})
        return DualEncoder.from_config(config, name="dinov2-small@56 + minilm-l6 (random heads)")
    except Exception as err:  # packaged weights missing: measure the pipeline on the tiny towers
        logger.warning("packaged towers unavailable (%s); indexing with the tiny test towers", err)
        from omnilm.dual.testing import tiny_dual

        return tiny_dual(name="tiny-dual")


def indexing_throughput() -> dict:
    from omnilm.dual.index import build_index
    from omnilm.dual.testing import write_shape_images

    model = _model()
    with tempfile.TemporaryDirectory() as tmp:
        write_shape_images(Path(tmp) / "images", INDEX_IMAGES, size=64)
        build_index(Path(tmp) / "images", model, Path(tmp) / "warm", progress=False)  # warm-up (first-call costs)
        for path in (Path(tmp) / "images").iterdir():
            path.touch()  # changed mtimes: everything is embedded again
        report = build_index(Path(tmp) / "images", model, Path(tmp) / "warm", progress=False)
    return {"model": model.name, "image_size": model.processor.image_size, "images": report.added + report.updated,
            "images_per_s": round((report.added + report.updated) / report.seconds, 1)}


def _clustered(n: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    points = centres[rng.integers(0, len(centres), n)] + 0.8 * rng.normal(size=(n, DIM)) / np.sqrt(DIM)
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def _latencies_ms(search, queries: np.ndarray) -> dict:
    search(queries[:1])  # warm-up
    times = []
    for query in queries:
        start = time.perf_counter()
        search(query[None])
        times.append((time.perf_counter() - start) * 1000)
    quantiles = statistics.quantiles(times, n=20)
    return {"p50_ms": round(statistics.median(times), 3), "p95_ms": round(quantiles[18], 3)}


def search_latency() -> dict:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(1000, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    results = {}
    for n in SIZES:
        vectors = _clustered(n, rng, centres)
        queries = _clustered(QUERIES, rng, centres)
        start = time.perf_counter()
        graph = FaissHNSW.build(vectors)
        build_s = time.perf_counter() - start
        exact = _latencies_ms(lambda q: exact_search(vectors, q, K), queries)
        ann = _latencies_ms(lambda q: graph.search(q, K), queries)
        truth = exact_search(vectors, queries, K)[1]
        found = graph.search(queries, K)[1]
        recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth)]))
        results[f"{n}"] = {"exact_numpy": exact, "faiss_hnsw": {**ann, "recall@10": round(recall, 4),
                                                                 "build_s": round(build_s, 2)}}
        logger.info("%d vectors: exact %s, hnsw %s (recall@10 %.3f)", n, exact, ann, recall)
    return results


def run() -> dict:
    return {"indexing": indexing_throughput(), "search": search_latency(),
            "settings": {"dim": DIM, "queries": QUERIES, "k": K, "hnsw": "M=32, efConstruction=80, efSearch=64"}}


if __name__ == "__main__":
    import json

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(json.dumps(run(), indent=2))
