"""CIDEr-D as the COCO caption evaluation (pycocoevalcap) computes it.

Each caption becomes, per n-gram order 1..4, a TF-IDF vector: term frequency times
``log(number of images) - log(max(1, document frequency))``, where the document frequency of an n-gram
is the number of images whose references contain it. For each reference the score per order is the
cosine similarity with the hypothesis vector after clipping (``min(hyp, ref) * ref``), times a Gaussian
penalty ``exp(-delta**2 / (2 * sigma**2))`` on the length difference. The per-image score is the mean
over orders and references, times 10; the corpus score is the mean over images.

As in the reference, the "length" in the penalty is the caption's bigram count (its word count minus
one), which gives the same difference except for empty captions.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

from omnilm.metrics._ngrams import ngram_counts

SIGMA = 6.0


def _tfidf(counts: Counter, document_frequency: Counter, log_num_images: float, n: int):
    """(per-order {ngram: weight}, per-order L2 norms, bigram count) of one caption's n-gram counts."""
    vectors: list[dict[tuple[str, ...], float]] = [{} for _ in range(n)]
    length = 0
    for gram, term_frequency in counts.items():
        order = len(gram) - 1
        vectors[order][gram] = term_frequency * (log_num_images - math.log(max(1.0, document_frequency[gram])))
        if order == 1:
            length += term_frequency
    norms = [math.sqrt(sum(w * w for w in vector.values())) for vector in vectors]
    return vectors, norms, length


def _similarity(hyp, ref, n: int, sigma: float) -> list[float]:
    """Clipped cosine similarity per order with the Gaussian length penalty."""
    (hyp_vectors, hyp_norms, hyp_len), (ref_vectors, ref_norms, ref_len) = hyp, ref
    penalty = math.exp(-((hyp_len - ref_len) ** 2) / (2 * sigma**2))
    values = []
    for order in range(n):
        ref_vector = ref_vectors[order]
        value = 0.0
        for gram, weight in hyp_vectors[order].items():
            ref_weight = ref_vector.get(gram, 0.0)
            value += min(weight, ref_weight) * ref_weight
        if hyp_norms[order] != 0 and ref_norms[order] != 0:
            value /= hyp_norms[order] * ref_norms[order]
        values.append(value * penalty)
    return values


def cider_d(
    hypotheses: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    n: int = 4,
    sigma: float = SIGMA,
) -> tuple[float, dict[Hashable, float]]:
    """Corpus CIDEr-D and per-item scores for tokenized ``{id: hyp}`` / ``{id: [ref, ...]}``.

    Document frequencies come from the references of the items given, so scores depend on the whole set:
    score a test set in one call.
    """
    keys = list(hypotheses)
    ref_counts = {key: [ngram_counts(ref.split(), n) for ref in references[key]] for key in keys}
    document_frequency: Counter = Counter()
    for counts_list in ref_counts.values():
        document_frequency.update(set().union(*counts_list))
    log_num_images = math.log(len(keys)) if keys else 0.0
    per_item = {}
    for key in keys:
        hyp = _tfidf(ngram_counts(hypotheses[key].split(), n), document_frequency, log_num_images, n)
        total = [0.0] * n
        for counts in ref_counts[key]:
            ref = _tfidf(counts, document_frequency, log_num_images, n)
            total = [a + b for a, b in zip(total, _similarity(hyp, ref, n, sigma))]
        per_item[key] = sum(total) / n / len(ref_counts[key]) * 10.0
    mean = sum(per_item.values()) / len(per_item) if per_item else 0.0
    return mean, per_item
