"""Corpus BLEU-1..4 as the COCO caption evaluation computes it.

Clipped n-gram matches and hypothesis n-gram counts are summed over the corpus; the brevity penalty uses,
for each hypothesis, the reference length closest to it (ties: the shorter one). The same tiny constants
as the reference keep zero counts finite (a BLEU-n with no n-gram match is ~0, never a division error).
Inputs are tokenized captions (tokens separated by whitespace), e.g. from :func:`tokenize_captions`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

from omnilm.metrics._ngrams import ngram_counts

_TINY = 1e-15  # added to match counts, so that 0 matches give ~0 rather than 0/0
_SMALL = 1e-9  # added to denominators


def _sentence_stats(hypothesis: str, references: Sequence[str], n: int) -> tuple[int, int, list[int], list[int]]:
    """(hypothesis length, closest reference length, clipped matches per order, hypothesis n-grams per order)."""
    tokens = hypothesis.split()
    max_ref_counts: Counter[tuple[str, ...]] = Counter()
    ref_lengths = []
    for reference in references:
        ref_tokens = reference.split()
        ref_lengths.append(len(ref_tokens))
        max_ref_counts |= ngram_counts(ref_tokens, n)  # element-wise max
    closest = min(ref_lengths, key=lambda length: (abs(length - len(tokens)), length))
    matches = [0] * n
    for gram, count in ngram_counts(tokens, n).items():
        matches[len(gram) - 1] += min(count, max_ref_counts[gram])
    guesses = [max(0, len(tokens) - k) for k in range(n)]
    return len(tokens), closest, matches, guesses


def _bleu_from_stats(hyp_len: float, ref_len: float, matches: Sequence[int], guesses: Sequence[int]) -> list[float]:
    """BLEU-1..n from summed statistics (geometric mean of precisions times brevity penalty)."""
    scores, product = [], 1.0
    for k, (match, guess) in enumerate(zip(matches, guesses)):
        product *= (match + _TINY) / (guess + _SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (hyp_len + _TINY) / (ref_len + _SMALL)
    if ratio < 1:
        penalty = math.exp(1 - 1 / ratio)
        scores = [score * penalty for score in scores]
    return scores


def bleu(
    hypotheses: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]], n: int = 4
) -> tuple[list[float], dict[Hashable, list[float]]]:
    """Corpus BLEU-1..n and per-item sentence BLEU-1..n for tokenized ``{id: hyp}`` / ``{id: [ref, ...]}``."""
    total_hyp, total_ref = 0, 0
    total_matches, total_guesses = [0] * n, [0] * n
    per_item = {}
    for key, hypothesis in hypotheses.items():
        hyp_len, ref_len, matches, guesses = _sentence_stats(hypothesis, references[key], n)
        per_item[key] = _bleu_from_stats(hyp_len, ref_len, matches, guesses)
        total_hyp += hyp_len
        total_ref += ref_len
        total_matches = [a + b for a, b in zip(total_matches, matches)]
        total_guesses = [a + b for a, b in zip(total_guesses, guesses)]
    return _bleu_from_stats(total_hyp, total_ref, total_matches, total_guesses), per_item
