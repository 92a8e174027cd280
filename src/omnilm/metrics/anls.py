"""ANLS, the average normalised Levenshtein similarity of ST-VQA and DocVQA (threshold 0.5).

As the DocVQA / InfographicVQA evaluation script computes it (``infographicsvqa_eval.py`` of the RRC
challenges): both strings are stripped, lower-cased and their whitespace collapsed; the edit distance of
those is divided by the length of the longer *original* string; a question scores 1 - the smallest such
ratio over its answers, and 0 when that is below the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

from omnilm.metrics.wer import edit_distance


def anls(prediction: str, answers: Sequence[str], threshold: float = 0.5) -> float:
    """ANLS of one prediction against the question's answers."""
    if isinstance(answers, str) or not answers:
        raise ValueError("anls needs a non-empty list of answers")
    predicted = " ".join(prediction.strip().lower().split())
    ratios = []
    for answer in answers:
        expected = " ".join(answer.strip().lower().split())
        length = max(len(answer), len(prediction))
        ratios.append(0.0 if length == 0 else edit_distance(predicted, expected) / length)  # characters
    score = 1.0 - min(ratios)
    return 0.0 if score < threshold else score
