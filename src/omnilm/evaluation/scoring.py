"""Score a task's predictions: overall metrics, per-category breakdowns, per-item scores.

Per-item metrics (a mean over items): ``vqa_accuracy``, ``exact_match``, ``anls``, ``relaxed_accuracy``
(the best over the references), ``choice_accuracy`` (the letter :func:`omnilm.metrics.parse_choice` reads
from the reply, against the gold letter). Corpus metrics: ``wer``, ``wer_whisper`` (Whisper's English
normaliser), ``pope`` (accuracy, precision, recall, F1, yes-ratio), ``mme`` (each subtask's acc + acc+,
perception and cognition totals), ``caption`` (BLEU, METEOR, ROUGE-L, CIDEr, SPICE).
"""

from __future__ import annotations

from collections import defaultdict

from omnilm.data.records import Record
from omnilm.errors import OmniError
from omnilm.evaluation.tasks import Task
from omnilm.metrics import (
    anls,
    caption_scores,
    exact_match,
    mme_answer,
    mme_scores,
    parse_choice,
    pope_answer,
    pope_scores,
    relaxed_accuracy,
    vqa_accuracy,
    wer,
)


def _choice(prediction: str, answers: list[str], record: Record) -> float:
    choices = record.fields.get("choices")
    if not choices:
        raise OmniError(f"choice_accuracy needs the record's options: give the task's data a `choices` spec "
                        f"(record {record.id!r})")
    return float(parse_choice(prediction, choices) == answers[0].strip())


PER_ITEM = {
    "vqa_accuracy": lambda p, refs, _: vqa_accuracy(p, refs),
    "exact_match": lambda p, refs, _: exact_match(p, refs),
    "anls": lambda p, refs, _: anls(p, refs),
    "relaxed_accuracy": lambda p, refs, _: max(relaxed_accuracy(p, r) for r in refs),
    "choice_accuracy": _choice,
}
# How each metric reads a reply (stated in the report).
PARSERS = {
    "choice_accuracy": "option letter: (X), then a lone X, then an option's text (MMMU's rules); else none",
    "pope": "no when the first sentence has the word no/No/not, else yes (POPE's evaluate.py)",
    "mme": "yes/no, else yes/no found in the first 4 characters, else other (MME's calculation.py)",
    "vqa_accuracy": "the official VQA normalisation (punctuation, digits, articles, contractions)",
    "anls": "lower-cased, whitespace collapsed (DocVQA's evaluation script)",
    "relaxed_accuracy": "a number (a trailing % divides by 100) within 5%, else exact text (ChartQA)",
    "exact_match": "lower-cased, surrounding punctuation stripped",
    "wer_whisper": "Whisper's English text normaliser",
}


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


def _aggregate(name: str, items: list[dict], refs: list[list[str]], records: list[Record],
               indices: list[int]) -> dict[str, float]:
    """The metric `name` over the items at `indices` (item scores already set), as {metric: value}."""
    predictions = [items[i]["prediction"] for i in indices]
    if name in PER_ITEM:
        return {name: _mean([items[i]["scores"][name] for i in indices])}
    if name in ("wer", "wer_whisper"):
        return {name: wer(predictions, [refs[i][0] for i in indices], normalize="whisper" if name == "wer_whisper"
                          else True)}
    if name == "pope":
        return {f"pope_{k}": v for k, v in pope_scores(predictions, [refs[i][0] for i in indices]).items()}
    if name == "mme":
        scores = mme_scores(predictions, [refs[i][0] for i in indices], [str(records[i].category) for i in indices],
                            [str(records[i].fields.get("image_id", records[i].id)) for i in indices])
        return {f"mme_{k}": v for k, v in scores.items()}
    raise OmniError(f"unknown metric {name!r}")


def score(task: Task, records: list[Record], items: list[dict]) -> dict:
    """Results for ``items`` (``{"id", "prediction", ...}`` in the order of ``records``); adds item scores."""
    refs = [references(task, r) for r in records]
    categories = [str(r.category if task.category_field == "category" else r.fields.get(task.category_field))
                  for r in records]
    metrics: dict[str, float] = {}
    unavailable: dict[str, str] = {}
    everything = list(range(len(items)))
    for name in task.metrics:
        if name in PER_ITEM:
            for item, answers, record in zip(items, refs, records):
                item.setdefault("scores", {})[name] = PER_ITEM[name](item["prediction"], answers, record)
        if name == "choice_accuracy":
            for item, record in zip(items, records):
                item["parsed"] = parse_choice(item["prediction"], record.fields.get("choices") or [])
        elif name in ("pope", "mme"):
            for item in items:
                item["parsed"] = (pope_answer if name == "pope" else mme_answer)(item["prediction"])
        if name == "caption":
            captions = caption_scores({item["id"]: item["prediction"] for item in items},
                                      {item["id"]: answers for item, answers in zip(items, refs)})
            unavailable.update(captions.pop("unavailable"))
            metrics.update(captions)
        else:
            metrics.update(_aggregate(name, items, refs, records, everything))
    by_category: dict[str, dict] = {}
    groups: dict[str, list[int]] = defaultdict(list)
    for index, category in enumerate(categories):
        groups[category].append(index)
    if len(groups) > 1 or "None" not in groups:
        for category, indices in sorted(groups.items()):
            entry: dict = {"count": len(indices)}
            for name in task.metrics:
                if name == "mme":
                    entry["mme_score"] = _aggregate(name, items, refs, records, indices).get(f"mme_{category}", 0.0)
                elif name != "caption":
                    entry.update(_aggregate(name, items, refs, records, indices))
            by_category[category] = entry
    parsers = {name: PARSERS[name] for name in task.metrics if name in PARSERS}
    return {"task": task.name, "description": task.description, "num_items": len(items), "metrics": metrics,
            "by_category": by_category, "unavailable": unavailable, "prompt": task.prompt,
            "postprocess": task.postprocess, "parsers": parsers}
