"""Yes/no benchmarks scored as their authors' scripts do: POPE and MME.

POPE (``evaluate.py`` of AoiDragon/POPE): the reply's first sentence (up to the first full stop), commas
removed, split on spaces; "no" when a word is ``No``, ``no`` or ``not``, else "yes". Accuracy, precision,
recall and F1 of "yes" as the positive class, and the share of "yes" replies.

MME (``eval_tool/calculation.py`` of the MME benchmark): the reply lower-cased; "yes"/"no" as is, else
"yes" when its first four characters hold "yes", "no" when they hold "no", else "other" (always wrong).
Per subtask: accuracy over questions + accuracy+ over images (both questions of the image right), each in
percent; perception sums its 10 subtasks, cognition its 4.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork",
                  "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def pope_answer(reply: str) -> str:
    """"yes" or "no" as POPE's script reads a reply."""
    first = reply.split(".")[0] if "." in reply else reply
    words = first.replace(",", "").split(" ")
    return "no" if {"No", "no", "not"} & set(words) else "yes"


def pope_scores(replies: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """accuracy, precision, recall, F1 and yes-ratio of raw replies against "yes"/"no" labels."""
    if len(replies) != len(labels) or not replies:
        raise ValueError(f"pope_scores needs as many labels as replies (got {len(replies)} and {len(labels)})")
    predicted = [pope_answer(r) == "yes" for r in replies]
    truth = [label.strip().lower() != "no" for label in labels]  # POPE: anything but "no" is a yes label
    tp = sum(p and t for p, t in zip(predicted, truth))
    fp = sum(p and not t for p, t in zip(predicted, truth))
    tn = sum(not p and not t for p, t in zip(predicted, truth))
    fn = sum(not p and t for p, t in zip(predicted, truth))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (tp + tn) / len(truth), "precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": sum(predicted) / len(predicted)}


def mme_answer(reply: str) -> str:
    """"yes", "no" or "other" as MME's calculation.py reads a reply."""
    text = reply.lower()
    if text in ("yes", "no"):
        return text
    head = text[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


def mme_scores(replies: Sequence[str], labels: Sequence[str], categories: Sequence[str],
               images: Sequence[str]) -> dict[str, float]:
    """Each subtask's score (acc + acc+, percent), and ``perception`` / ``cognition`` (their sums)."""
    if not (len(replies) == len(labels) == len(categories) == len(images)) or not replies:
        raise ValueError("mme_scores needs one label, category and image per reply")
    right: dict[str, list[bool]] = defaultdict(list)
    per_image: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for reply, label, category, image in zip(replies, labels, categories, images):
        correct = mme_answer(reply) == label.strip().lower()
        right[category].append(correct)
        per_image[(category, image)].append(correct)
    scores = {}
    for category, marks in right.items():
        pairs = [all(v) for (c, _), v in per_image.items() if c == category]
        scores[category] = 100.0 * sum(marks) / len(marks) + 100.0 * sum(pairs) / len(pairs)
    scores["perception"] = sum(scores.get(c, 0.0) for c in MME_PERCEPTION)
    scores["cognition"] = sum(scores.get(c, 0.0) for c in MME_COGNITION)
    return scores
