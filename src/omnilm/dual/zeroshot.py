"""Zero-shot classification: each class is the average embedding of its name in several prompt templates.

    classes (K) × templates (P) → text embeddings (K, P, D) → mean over P → renormalise → (K, D)
    image embeddings (N, D) @ classifierᵀ → scores (N, K)
"""

from __future__ import annotations

import numpy as np

from omnilm.dual.api import DualEncoder

# A short ensemble in the spirit of CLIP's 80 ImageNet prompts: averaging smooths out any one phrasing.
TEMPLATES = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a drawing of a {}.",
    "a rendering of a {}.",
    "a {}.",
    "a photo of the {}.",
    "a close-up photo of a {}.",
)


def classifier_weights(model: DualEncoder, classnames: list[str], templates: tuple[str, ...] = TEMPLATES) -> np.ndarray:
    """Unit class embeddings (K, D), each the renormalised mean of its prompts' embeddings."""
    if not classnames:
        raise ValueError("zero-shot classification needs at least one class name")
    if not templates or any("{}" not in t for t in templates):
        raise ValueError("every template needs a {} where the class name goes")
    prompts = [t.format(name) for name in classnames for t in templates]
    embeds = model.embed_texts(prompts).reshape(len(classnames), len(templates), -1)  # (K, P, D)
    weights = embeds.mean(axis=1)  # (K, D)
    return weights / np.linalg.norm(weights, axis=1, keepdims=True)


def zero_shot_scores(image_embeds: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Cosine scores (N, K) of unit image embeddings (N, D) against class weights (K, D)."""
    return image_embeds @ weights.T


def classify(model: DualEncoder, images: list, classnames: list[str], templates: tuple[str, ...] = TEMPLATES,
             *, image_embeds: np.ndarray | None = None) -> list[str]:
    """The most likely class name for each image (paths, bytes, data URLs or PIL images)."""
    embeds = model.embed_images(images) if image_embeds is None else image_embeds
    scores = zero_shot_scores(embeds, classifier_weights(model, classnames, templates))
    return [classnames[i] for i in scores.argmax(axis=1)]
