"""Evaluation tasks: small YAML files naming a dataset, a prompt, generation settings and metrics.

Example (``src/omnilm/evaluation/tasks/easy-vqa.yaml``)::

    name: easy-vqa
    description: easy-VQA test split, typed questions
    data: {dataset: easy-vqa, file: test.jsonl, split: test}   # or a JSONL path relative to this file
    prompt: "{text}\\nAnswer with one word."        # {text}: the question's text; record fields too
    generation: {max_new_tokens: 8, temperature: 0}
    postprocess: [first_line, strip, lower, strip_punctuation]
    metrics: [vqa_accuracy, exact_match]
    confusion_matrix: true

A ``dataset`` is built on first use under ``$OMNILM_DATA`` (default ``$OMNILM_CACHE/data``, i.e.
``~/.cache/omnilm/data``) with the builder of that name (see ``omnilm data --help``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import string
from pathlib import Path
from typing import Any

import yaml

from omnilm.errors import OmniError
from omnilm.paths import cache_dir

logger = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).parent / "tasks"
METRICS = ("vqa_accuracy", "exact_match", "wer", "caption")
POSTPROCESSORS = {
    "strip": str.strip,
    "lower": str.lower,
    "first_line": lambda text: text.strip().split("\n", 1)[0],
    "first_word": lambda text: (text.split() or [""])[0],
    "strip_punctuation": lambda text: text.strip(string.punctuation + string.whitespace),
}
GENERATION_KEYS = ("max_new_tokens", "temperature", "top_p", "stop", "seed")


class TaskError(OmniError):
    """A task file is invalid; the message names the file and the field."""


@dataclasses.dataclass
class Task:
    """A validated task. ``data`` is the resolved JSONL path; ``dataset`` the builder that makes it."""

    name: str
    data: Path
    dataset: str | None = None
    split: str = "test"  # the split the dataset builder makes
    description: str = ""
    media_root: Path | None = None
    prompt: str = "{text}"
    system: str | None = None
    generation: dict[str, Any] = dataclasses.field(default_factory=lambda: {"max_new_tokens": 32, "temperature": 0})
    postprocess: list[str] = dataclasses.field(default_factory=lambda: ["strip"])
    metrics: list[str] = dataclasses.field(default_factory=lambda: ["exact_match"])
    references_field: str | None = None  # record field with a list of answers/references; default: the answer
    category_field: str = "category"
    confusion_matrix: bool = False
    batch_size: int = 8
    source: str = ""  # where the task was read from

    def clean(self, text: str) -> str:
        """Apply the task's post-processing steps to a raw model output."""
        for step in self.postprocess:
            text = POSTPROCESSORS[step](text)
        return text


def data_root() -> Path:
    """Where task datasets are built: ``$OMNILM_DATA``, else ``$OMNILM_CACHE/data``."""
    if os.environ.get("OMNILM_DATA"):
        return Path(os.environ["OMNILM_DATA"])
    return cache_dir("data")


def builtin_tasks() -> list[str]:
    """Names of the tasks shipped with omnilm."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def _fail(source: str, field: str, problem: str) -> TaskError:
    return TaskError(f"task {source}: field '{field}': {problem}")


def _expect(source: str, raw: dict, field: str, kind: type | tuple, default: Any = None) -> Any:
    value = raw.get(field, default)
    if value is not None and not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise _fail(source, field, f"expected {names}, got {type(value).__name__} {value!r}")
    return value


def parse_task(raw: Any, source: str, base_dir: Path) -> Task:
    """Validate a decoded task mapping; errors name the field and say what is allowed."""
    if not isinstance(raw, dict):
        raise TaskError(f"task {source}: expected a mapping of fields at the top level, got {type(raw).__name__}")
    allowed = {f.name for f in dataclasses.fields(Task)} - {"source", "split"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise _fail(source, unknown[0], f"unknown field; the fields are {', '.join(sorted(allowed))}")
    name = _expect(source, raw, "name", str)
    if not name:
        raise _fail(source, "name", "required (a short name such as easy-vqa)")
    data = raw.get("data")
    dataset, split = None, "test"
    if isinstance(data, str):
        path = (base_dir / data).resolve()
    elif isinstance(data, dict):
        dataset, file, split = data.get("dataset"), data.get("file"), data.get("split", "test")
        if not all(isinstance(v, str) for v in (dataset, file, split)) or set(data) - {"dataset", "file", "split"}:
            raise _fail(source, "data", "expected {dataset: NAME, file: FILE.jsonl, split: test}")
        from omnilm.data.builders import DATASETS

        if dataset not in DATASETS:
            raise _fail(source, "data.dataset", f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
        path = data_root() / dataset / file
    else:
        raise _fail(source, "data", "required: a JSONL path (relative to the task file) or {dataset:, file:}")
    media_root = _expect(source, raw, "media_root", str)
    prompt = _expect(source, raw, "prompt", str, "{text}")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(prompt) if f is not None]
    except ValueError as error:
        raise _fail(source, "prompt", f"not a valid template ({error}); write literal braces as {{{{ }}}}") from None
    if any(not f for f in fields):
        raise _fail(source, "prompt", "use named fields such as {text}, not {}")
    generation = _expect(source, raw, "generation", dict, {}) or {}
    bad = sorted(set(generation) - set(GENERATION_KEYS))
    if bad:
        raise _fail(source, f"generation.{bad[0]}", f"unknown setting; use {', '.join(GENERATION_KEYS)}")
    for key in ("max_new_tokens", "seed"):
        if key in generation and (not isinstance(generation[key], int) or generation[key] < 0):
            raise _fail(source, f"generation.{key}", f"expected a non-negative integer, got {generation[key]!r}")
    generation = {"max_new_tokens": 32, "temperature": 0, **generation}
    postprocess = _expect(source, raw, "postprocess", list, ["strip"])
    for step in postprocess:
        if step not in POSTPROCESSORS:
            raise _fail(source, "postprocess", f"unknown step {step!r}; choose from {', '.join(POSTPROCESSORS)}")
    metrics = _expect(source, raw, "metrics", list, ["exact_match"])
    if not metrics:
        raise _fail(source, "metrics", f"list at least one of {', '.join(METRICS)}")
    for metric in metrics:
        if metric not in METRICS:
            raise _fail(source, "metrics", f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    batch_size = _expect(source, raw, "batch_size", int, 8)
    if batch_size < 1:
        raise _fail(source, "batch_size", f"must be at least 1, got {batch_size}")
    return Task(
        name=name,
        data=path,
        dataset=dataset,
        split=split if dataset else "test",
        description=_expect(source, raw, "description", str, ""),
        media_root=(base_dir / media_root).resolve() if media_root else None,
        prompt=prompt,
        system=_expect(source, raw, "system", str),
        generation=generation,
        postprocess=postprocess,
        metrics=metrics,
        references_field=_expect(source, raw, "references_field", str),
        category_field=_expect(source, raw, "category_field", str, "category"),
        confusion_matrix=bool(_expect(source, raw, "confusion_matrix", bool, False)),
        batch_size=batch_size,
        source=source,
    )


def load_task(name_or_path: str | Path) -> Task:
    """A built-in task by name (see :func:`builtin_tasks`) or a task YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = BUILTIN_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise TaskError(f"unknown task {str(name_or_path)!r}; built-in tasks: {', '.join(builtin_tasks())}, "
                            f"or give the path of a task YAML file")
    if not path.is_file():
        raise TaskError(f"task file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise TaskError(f"task {path}: not valid YAML: {error}") from None
    return parse_task(raw, str(path), path.parent)


def ensure_data(task: Task) -> Path:
    """The task's JSONL file, building its dataset first when it is missing."""
    if task.data.is_file():
        return task.data
    if task.dataset is None:
        raise TaskError(f"task {task.source}: field 'data': file not found: {task.data}")
    from omnilm.data.builders import get_builder

    out_dir = task.data.parent
    logger.info("building dataset %s in %s (first use)", task.dataset, out_dir)
    get_builder(task.dataset)(out_dir, splits=(task.split,))
    if not task.data.is_file():
        raise TaskError(f"task {task.source}: field 'data': dataset {task.dataset} has no file {task.data.name}")
    return task.data
