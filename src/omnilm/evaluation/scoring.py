"""Score a task's predictions: overall metrics, per-category breakdowns, per-item scores."""

from __future__ import annotations

from collections import defaultdict

from omnilm.data.records import Record
from omnilm.errors import OmniError
from omnilm.evaluation.tasks import Task
from omnilm.metrics import caption_scores, exact_match, vqa_accuracy, wer

PER_ITEM = {"vqa_accuracy": vqa_accuracy, "exact_match": exact_match}


def references(task: Task, record: Record) -> list[str]:
    """The answers/references a prediction is scored against."""
    if task.references_field is None:
        return [record.answer]
    value = record.fields.get(task.references_field)
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise OmniError(f"task {task.source}: field 'references_field': record {record.id!r} (line {record.line}) "
                        f"needs a non-empty list of strings in {task.references_field!r}, got {value!r}")
    return value


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _metric(name: str, items: list[dict], refs: list[list[str]], indices: list[int]) -> float:
    """A per-item metric's mean, or the WER, over the items at ``indices`` (item scores already set)."""
    if name in PER_ITEM:
        return _mean([items[i]["scores"][name] for i in indices])
    return wer([items[i]["prediction"] for i in indices], [refs[i][0] for i in indices])


def score(task: Task, records: list[Record], items: list[dict]) -> dict:
    """Results for ``items`` (``{"id", "prediction", ...}`` in the order of ``records``); adds item scores."""
    refs = [references(task, r) for r in records]
    categories = [str(r.category if task.category_field == "category" else r.fields.get(task.category_field))
                  for r in records]
    metrics: dict[str, float] = {}
    unavailable: dict[str, str] = {}
    for name in task.metrics:
        if name in PER_ITEM:
            for item, answers in zip(items, refs):
                item.setdefault("scores", {})[name] = PER_ITEM[name](item["prediction"], answers)
        if name == "caption":
            captions = caption_scores({item["id"]: item["prediction"] for item in items},
                                      {item["id"]: answers for item, answers in zip(items, refs)})
            unavailable.update(captions.pop("unavailable"))
            metrics.update(captions)
        else:
            metrics[name] = _metric(name, items, refs, list(range(len(items))))
    by_category: dict[str, dict] = {}
    groups: dict[str, list[int]] = defaultdict(list)
    for index, category in enumerate(categories):
        groups[category].append(index)
    if len(groups) > 1 or "None" not in groups:
        for category, indices in sorted(groups.items()):
            by_category[category] = {"count": len(indices)} | {
                name: _metric(name, items, refs, indices) for name in task.metrics if name != "caption"}
    return {"task": task.name, "description": task.description, "num_items": len(items), "metrics": metrics,
            "by_category": by_category, "unavailable": unavailable}
