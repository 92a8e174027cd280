"""ChartQA's relaxed accuracy: a numeric answer within 5% of the gold one is right; others match exactly.

As ChartQA (Masry et al., 2022, section 5.1) defines it and its reference implementations compute it
(Pix2Struct / Qwen-VL ``evaluate_vqa.py``, lmms-eval ``chartqa``): a trailing ``%`` divides by 100; a
numeric gold of 0 falls back to the exact (case-insensitive) comparison.
"""

from __future__ import annotations


def _number(text: str) -> float | None:
    try:
        return float(text.rstrip("%")) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        return None


def relaxed_accuracy(prediction: str, answer: str, tolerance: float = 0.05) -> float:
    """1.0 when `prediction` is within `tolerance` (relative) of a numeric `answer` or equals it, else 0.0."""
    predicted, expected = _number(prediction), _number(answer)
    if predicted is not None and expected:
        return float(abs(predicted - expected) / abs(expected) <= tolerance)
    return float(prediction.lower() == answer.lower())
