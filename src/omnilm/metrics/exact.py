"""Exact-match accuracy for short answers."""

from __future__ import annotations

import string
from collections.abc import Sequence

_STRIP = string.whitespace + string.punctuation


def normalize_answer(text: str) -> str:
    """Lower-case, collapse whitespace, strip surrounding punctuation ("Yes." -> "yes")."""
    return " ".join(text.lower().split()).strip(_STRIP)


def exact_match(prediction: str, answers: str | Sequence[str], normalize: bool = True) -> float:
    """1.0 when the prediction equals one of the answers (after :func:`normalize_answer`), else 0.0."""
    if isinstance(answers, str):
        answers = [answers]
    if not answers:
        raise ValueError("exact_match needs at least one reference answer; got an empty list")
    prepare = normalize_answer if normalize else (lambda text: text)
    return float(prepare(prediction) in {prepare(answer) for answer in answers})
