"""ROUGE-L as the COCO caption evaluation computes it.

Per image: the longest common subsequence (LCS) with each reference gives a precision (LCS / hypothesis
length) and a recall (LCS / reference length); the maximum precision and maximum recall over the
references (taken separately) are combined into an F-measure with beta = 1.2. The corpus score is the mean
over images. Inputs are tokenized captions; tokens are split on single spaces, as the reference does.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

BETA = 1.2


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (O(len(a) * len(b)) time, O(len(b)) memory)."""
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l_sentence(hypothesis: str, references: Sequence[str], beta: float = BETA) -> float:
    """ROUGE-L of one tokenized hypothesis against its tokenized references."""
    hyp_tokens = hypothesis.split(" ")
    precision, recall = 0.0, 0.0
    for reference in references:
        ref_tokens = reference.split(" ")
        lcs = lcs_length(ref_tokens, hyp_tokens)
        precision = max(precision, lcs / len(hyp_tokens))
        recall = max(recall, lcs / len(ref_tokens))
    if precision == 0 or recall == 0:
        return 0.0
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def rouge_l(
    hypotheses: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]], beta: float = BETA
) -> tuple[float, dict[Hashable, float]]:
    """Mean ROUGE-L over items and the per-item scores, for tokenized ``{id: hyp}`` / ``{id: [ref, ...]}``."""
    per_item = {key: rouge_l_sentence(hyp, references[key], beta) for key, hyp in hypotheses.items()}
    mean = sum(per_item.values()) / len(per_item) if per_item else 0.0
    return mean, per_item
