"""Write evaluation results: ``results.json``, a Markdown ``report.md`` and a ``confusion_matrix.png``."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from omnilm.data.records import Record
from omnilm.evaluation.tasks import Task

logger = logging.getLogger(__name__)

OTHER = "(other)"
_EXAMPLES = 10


def confusion(records: list[Record], items: list[dict]) -> tuple[list[str], list[list[int]]]:
    """Labels (the reference answers, then ``(other)`` for anything else) and counts [true][predicted]."""
    truth = [r.answer.strip().lower() for r in records]
    labels = sorted(set(truth))
    index = {label: i for i, label in enumerate(labels)}
    predicted = [item["prediction"].strip().lower() for item in items]
    if any(p not in index for p in predicted):
        labels.append(OTHER)
    matrix = [[0] * len(labels) for _ in labels]
    for t, p in zip(truth, predicted):
        matrix[index[t]][index.get(p, len(labels) - 1)] += 1
    return labels, matrix


def plot_confusion(labels: list[str], matrix: list[list[int]], path: Path, title: str) -> None:
    """Save a confusion-matrix heat map (rows: reference, columns: prediction) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(4.0, 0.5 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("prediction")
    ax.set_ylabel("reference")
    ax.set_title(title)
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                        color="white" if count > peak / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown(task: Task, records: list[Record], items: list[dict], results: dict, confusion_png: str | None) -> str:
    """The Markdown report: overall metrics, per-category table, confusion matrix, example errors."""
    lines = [f"# {task.name} — {results.get('model', '?')}", ""]
    if task.description:
        lines += [task.description, ""]
    lines += [f"Items: {results['num_items']} · generation: `{json.dumps(task.generation)}`", "",
              f"Prompt: `{json.dumps(task.prompt)}`" + (f" · system: `{json.dumps(task.system)}`" if task.system else ""),
              "", f"Answer parsing: postprocess `{' → '.join(task.postprocess) or 'none'}`"]
    lines += [f"; {name} reads it as: {rule}" for name, rule in results.get("parsers", {}).items()]
    lines += ["", "## Metrics", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {name} | {_fmt(value)} |" for name, value in results["metrics"].items()]
    for name, reason in results.get("unavailable", {}).items():
        lines.append(f"| {name} | not computed: {reason} |")
    if results["by_category"]:
        names = [k for k in next(iter(results["by_category"].values())) if k != "count"]
        lines += ["", "## By category", "", "| category | items | " + " | ".join(names) + " |",
                  "| --- " * (len(names) + 2) + "|"]
        for category, entry in results["by_category"].items():
            lines.append(f"| {category} | {entry['count']} | " + " | ".join(_fmt(entry[n]) for n in names) + " |")
    if confusion_png:
        lines += ["", "## Confusion matrix", "", f"![confusion matrix]({confusion_png})"]
    wrong = [(r, item) for r, item in zip(records, items) if item.get("scores", {}).get("exact_match", 1.0) < 1.0]
    if wrong:
        lines += ["", f"## Examples of errors (first {min(_EXAMPLES, len(wrong))} of {len(wrong)})", "",
                  "| id | reference | prediction |", "| --- | --- | --- |"]
        for record, item in wrong[:_EXAMPLES]:
            shown = item["prediction"].replace("|", "\\|").replace("\n", " ")[:80]
            lines.append(f"| {record.id} | {record.answer} | {shown} |")
    common = Counter(item["prediction"] for item in items).most_common(5)
    lines += ["", "Most frequent predictions: " + ", ".join(f"`{p}` ({n})" for p, n in common), ""]
    return "\n".join(lines)


def write_report(out_dir: Path, task: Task, records: list[Record], items: list[dict], results: dict) -> dict:
    """Write results.json, report.md and (when the task asks) confusion_matrix.png; returns their paths."""
    out_dir = Path(out_dir)
    paths = {"results": out_dir / "results.json", "report": out_dir / "report.md"}
    png = None
    if task.confusion_matrix:
        labels, matrix = confusion(records, items)
        results["confusion_matrix"] = {"labels": labels, "counts": matrix}
        paths["confusion_matrix"] = out_dir / "confusion_matrix.png"
        plot_confusion(labels, matrix, paths["confusion_matrix"], f"{task.name}: {results.get('model', '')}")
        png = paths["confusion_matrix"].name
    results["files"] = {name: str(path) for name, path in paths.items()}
    paths["results"].write_text(json.dumps(results, indent=2) + "\n")
    paths["report"].write_text(markdown(task, records, items, results, png))
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return results["files"]
