"""Nearest-neighbour search over unit vectors by inner product (= cosine): exact numpy, or an embedded
HNSW graph from FAISS (`pip install faiss-cpu`: a wheel with no torch; no server to run).

    vectors (N, D) float32, unit · queries (Q, D) → scores (Q, k) descending, ids (Q, k) (-1 past N)
"""

from __future__ import annotations

import numpy as np

from omnilm.errors import OmniError


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product: one matrix product, a partial sort of k per query."""
    queries = np.atleast_2d(queries).astype(np.float32, copy=False)
    n = vectors.shape[0]
    k_eff = min(k, n)
    if k_eff == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    scores = queries @ vectors.T  # (Q, N)
    top = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]  # (Q, k) unordered
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    return np.take_along_axis(top_scores, order, axis=1), np.take_along_axis(top, order, axis=1).astype(np.int64)


class FaissHNSW:
    """HNSW graph (FAISS IndexHNSWFlat, inner product). Recall is tuned by `ef_search` at query time."""

    name = "faiss"

    def __init__(self, index) -> None:
        self.index = index

    @staticmethod
    def _faiss():
        try:
            import faiss
        except ImportError:
            raise OmniError("the ANN index needs FAISS: pip install faiss-cpu (or use --ann exact)") from None
        return faiss

    @classmethod
    def build(cls, vectors: np.ndarray, *, m: int = 32, ef_construction: int = 80, ef_search: int = 64) -> FaissHNSW:
        faiss = cls._faiss()
        index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return cls(index)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        scores, ids = self.index.search(queries, k)
        return scores, ids.astype(np.int64)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def to_bytes(self) -> bytes:
        return self._faiss().serialize_index(self.index).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, *, ef_search: int = 64) -> FaissHNSW:
        faiss = cls._faiss()
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        index.hnsw.efSearch = ef_search
        return cls(index)


# Backends by exact name; a further one (hnswlib, usearch) needs build / search / to_bytes / from_bytes.
BACKENDS = {"faiss": FaissHNSW}
