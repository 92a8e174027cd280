"""Retrieval metrics for dual encoders: Recall@K in both directions and zero-shot accuracy.

Similarity matrices are ``(N_images, N_texts)``. By default image i matches text i; for several captions
per image pass ``text_to_image`` (the image index of each text). Ties are broken by index (a stable sort),
so results are deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_matrix(similarity) -> np.ndarray:
    matrix = similarity.detach().float().cpu().numpy() if hasattr(similarity, "detach") else np.asarray(similarity)
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-D similarity matrix (images x texts), got shape {matrix.shape}")
    return matrix.astype(np.float64)


def recall_at_k(
    similarity, ks: Sequence[int] = (1, 5, 10), text_to_image: Sequence[int] | None = None
) -> dict[str, float]:
    """Recall@K for image->text and text->image retrieval, keys like ``image_to_text/R@1``."""
    sim = _as_matrix(similarity)
    num_images, num_texts = sim.shape
    if text_to_image is None:
        if num_images != num_texts:
            raise ValueError(f"a {num_images}x{num_texts} similarity matrix needs text_to_image (one image per text)")
        text_to_image = range(num_texts)
    owner = np.asarray(list(text_to_image))
    if owner.shape != (num_texts,) or owner.min(initial=0) < 0 or owner.max(initial=0) >= num_images:
        raise ValueError(f"text_to_image must give an image index in [0, {num_images}) for each of {num_texts} texts")
    # Rank (0 = best) of every text for every image and of every image for every text.
    text_ranks = np.argsort(np.argsort(-sim, axis=1, kind="stable"), axis=1, kind="stable")
    image_ranks = np.argsort(np.argsort(-sim, axis=0, kind="stable"), axis=0, kind="stable")
    best_text_rank = np.full(num_images, np.iinfo(np.int64).max)
    np.minimum.at(best_text_rank, owner, text_ranks[owner, np.arange(num_texts)])
    if (best_text_rank == np.iinfo(np.int64).max).any():
        raise ValueError("every image needs at least one matching text in text_to_image")
    image_rank = image_ranks[owner, np.arange(num_texts)]
    results = {}
    for k in ks:
        results[f"image_to_text/R@{k}"] = float(np.mean(best_text_rank < k))
        results[f"text_to_image/R@{k}"] = float(np.mean(image_rank < k))
    return results


def zero_shot_accuracy(logits, labels: Sequence[int], k: int = 1) -> float:
    """Top-k accuracy of ``(N, num_classes)`` scores against integer labels (zero-shot classification)."""
    scores = _as_matrix(logits)
    labels = np.asarray(labels)
    if labels.shape != (scores.shape[0],):
        raise ValueError(f"got {scores.shape[0]} score rows but {labels.shape} labels")
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean((top == labels[:, None]).any(axis=1)))
