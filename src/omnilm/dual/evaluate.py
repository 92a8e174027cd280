"""Dual-encoder evaluation: Recall@K both ways and zero-shot accuracy per attribute.

Captions may repeat (easy-vqa has 24 distinct captions over ~900 test images), so a retrieved item
counts as correct when its caption *equals* the query's: text→image R@K asks whether any of the top K
images carries the query caption; image→text R@K ranks the distinct captions against each image.
"""

from __future__ import annotations

import numpy as np

from omnilm.data.easy_vqa import COLORS, SHAPES
from omnilm.dual.api import DualEncoder
from omnilm.dual.captions import CaptionRecord
from omnilm.dual.zeroshot import TEMPLATES, classifier_weights, zero_shot_scores
from omnilm.metrics.retrieval import zero_shot_accuracy


def retrieval_recall(image_embeds: np.ndarray, captions: list[str], text_embeds: np.ndarray, gallery: list[str],
                     ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Recall@K for images (N, D) with `captions` (N) against distinct caption embeddings (T, D) `gallery`."""
    index = {caption: i for i, caption in enumerate(gallery)}
    truth = np.array([index[c] for c in captions])  # (N,) gallery id of each image's caption
    sim = image_embeds @ text_embeds.T  # (N, T)
    text_rank = (sim > sim[np.arange(len(truth)), truth][:, None]).sum(axis=1)  # (N,) rank of the true caption
    order = np.argsort(-sim, axis=0, kind="stable")  # (N, T): images by score, per caption
    results = {}
    for k in ks:
        results[f"image_to_text/R@{k}"] = float(np.mean(text_rank < k))
        hit = (truth[order[:k]] == np.arange(len(gallery))[None, :]).any(axis=0)  # (T,) a top-k image matches
        results[f"text_to_image/R@{k}"] = float(np.mean(hit[truth]))  # one query per pair
    return results


def retrieval_metrics(model: DualEncoder, records: list[CaptionRecord], *, image_embeds: np.ndarray | None = None,
             templates: tuple[str, ...] = TEMPLATES) -> dict[str, float]:
    """Recall@1/@5 over records with a full caption; zero-shot shape / colour accuracy where labelled."""
    if image_embeds is None:
        image_embeds = model.embed_images([r.image for r in records])
    paired = [i for i, r in enumerate(records) if r.shape and r.color] or list(range(len(records)))
    captions = [records[i].caption for i in paired]
    gallery = sorted(set(captions))
    results = retrieval_recall(image_embeds[paired], captions, model.embed_texts(gallery), gallery)
    for attribute, classes, prompt in (("shape", SHAPES, "{}"), ("color", COLORS, "{} shape")):
        labelled = [i for i, r in enumerate(records) if getattr(r, attribute) in classes]
        if not labelled:
            continue
        weights = classifier_weights(model, [prompt.format(c) for c in classes], templates)
        labels = [classes.index(getattr(records[i], attribute)) for i in labelled]
        scores = zero_shot_scores(image_embeds[labelled], weights)
        results[f"zeroshot/{attribute}"] = zero_shot_accuracy(scores, labels)
        results[f"zeroshot/{attribute}_n"] = len(labelled)
    results["pairs"] = len(paired)
    return results
