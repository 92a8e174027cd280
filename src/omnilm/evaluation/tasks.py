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

from omnilm.configkit import coerce, require
from omnilm.errors import ConfigError, OmniError
from omnilm.evaluation.hubdata import EvalData
from omnilm.generation import GenerationSettings
from omnilm.paths import cache_dir

logger = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).parent / "tasks"
BENCHMARK_DIR = BUILTIN_DIR / "benchmarks"
METRICS = ("vqa_accuracy", "exact_match", "anls", "relaxed_accuracy", "choice_accuracy", "pope", "mme", "wer",
           "wer_whisper", "caption", "recall_at_k")
POSTPROCESSORS = {
    "strip": str.strip,
    "lower": str.lower,
    "first_line": lambda text: text.strip().split("\n", 1)[0],
    "last_line": lambda text: text.strip().rsplit("\n", 1)[-1],
    "first_word": lambda text: (text.split() or [""])[0],
    "strip_punctuation": lambda text: text.strip(string.punctuation + string.whitespace),
}
GENERATION_KEYS = ("max_new_tokens", "temperature", "top_p", "stop", "seed")


class TaskError(OmniError):
    """A task file is invalid; the message names the file and the field."""


def data_root() -> Path:
    """Where task datasets are built: ``$OMNILM_DATA``, else ``$OMNILM_CACHE/data``."""
    return Path(os.environ.get("OMNILM_DATA") or cache_dir("data"))


def builtin_tasks() -> list[str]:
    """Names of the tasks shipped with omnilm whose data builds offline (easy-VQA and its variants)."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def benchmark_tasks() -> list[str]:
    """Names of the standard benchmarks shipped as tasks (their data comes from the hub; docs/benchmarks.md)."""
    return sorted(p.stem for p in BENCHMARK_DIR.glob("*.yaml"))


@dataclasses.dataclass
class TaskFile:
    """The fields of a task YAML file as written (see the module docstring); `validate` checks their values."""

    name: str  # a short name such as easy-vqa
    # a JSONL path relative to the task file, {dataset: NAME, file: FILE, split: S} (an omnilm builder),
    # or a hub / parquet / `datasets` source with its columns (omnilm.evaluation.hubdata.EvalData)
    data: str | dict[str, Any]
    description: str = ""
    media_root: str | None = None
    prompt: str = "{text}"
    system: str | None = None
    generation: dict[str, Any] = dataclasses.field(default_factory=lambda: {"max_new_tokens": 32, "temperature": 0})
    postprocess: list[str] = dataclasses.field(default_factory=lambda: ["strip"])
    metrics: list[str] = dataclasses.field(default_factory=lambda: ["exact_match"])
    references_field: str | None = None  # record field with a list of answers/references; default: the answer
    category_field: str = "category"
    confusion_matrix: bool = False
    batch_size: int = 8
    video_frames: int | None = None  # frames the task samples from each video (uniformly) before the model sees it
    source_url: str = ""  # the benchmark's home page or paper (for the report and docs/benchmarks.md)

    def validate(self) -> None:
        from omnilm.data.builders import DATASETS

        require(bool(self.name), "name", "required (a short name such as easy-vqa)")
        if isinstance(self.data, dict) and "dataset" in self.data:
            require(set(self.data) <= {"dataset", "file", "split"} and {"dataset", "file"} <= set(self.data), "data",
                    "expected {dataset: NAME, file: FILE.jsonl, split: test}")
            require(self.data["dataset"] in DATASETS, "data.dataset",
                    f"unknown dataset {self.data['dataset']!r}; choose from {', '.join(DATASETS)}")
        elif isinstance(self.data, dict):
            coerce(EvalData, self.data, "data").validate("data")
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(self.prompt) if f is not None]
        except ValueError as error:
            raise ConfigError(f"prompt: not a valid template ({error}); write literal braces as {{{{ }}}}",
                              field="prompt") from None
        require(all(fields), "prompt", "use named fields such as {text}, not {}")
        bad = sorted(set(self.generation) - set(GENERATION_KEYS))
        require(not bad, f"generation.{bad[0] if bad else ''}", f"unknown setting; use {', '.join(GENERATION_KEYS)}")
        GenerationSettings(**self.generation)  # checks the values, naming the field (generation.max_new_tokens)
        for step in self.postprocess:
            require(step in POSTPROCESSORS, "postprocess",
                    f"unknown step {step!r}; choose from {', '.join(POSTPROCESSORS)}")
        require(bool(self.metrics), "metrics", f"list at least one of {', '.join(METRICS)}")
        for metric in self.metrics:
            require(metric in METRICS, "metrics", f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
        require(self.batch_size >= 1, "batch_size", f"must be at least 1, got {self.batch_size}")
        require(self.video_frames is None or self.video_frames >= 1, "video_frames", "must be at least 1")
        require("recall_at_k" not in self.metrics or self.metrics == ["recall_at_k"], "metrics",
                "recall_at_k scores a dual encoder's embeddings; it cannot be combined with generated-answer metrics")


@dataclasses.dataclass
class Task(TaskFile):
    """A validated task: the file's fields, with ``data`` resolved to the JSONL path and ``dataset`` the builder
    that makes it (None for a plain file)."""

    data: Path | None
    dataset: str | None = None
    eval_data: EvalData | None = None  # a hub / parquet / `datasets` source (data is then None)
    base_dir: Path = Path(".")
    split: str = "test"  # the split the dataset builder makes
    media_root: Path | None = None
    source: str = ""  # where the task was read from

    def clean(self, text: str) -> str:
        """Apply the task's post-processing steps to a raw model output."""
        for step in self.postprocess:
            text = POSTPROCESSORS[step](text)
        return text


def parse_task(raw: Any, source: str, base_dir: Path) -> Task:
    """Validate a decoded task mapping; errors name the field and say what is allowed."""
    try:
        spec = coerce(TaskFile, raw, "")
        spec.validate()
    except ConfigError as err:
        field = err.field or "config"
        raise TaskError(f"task {source}: field '{field}': {str(err).removeprefix(field + ': ')}") from None
    dataset, split, eval_data = None, "test", None
    if isinstance(spec.data, dict) and "dataset" in spec.data:
        dataset, split = spec.data["dataset"], spec.data.get("split", "test")
        path = data_root() / dataset / spec.data["file"]
    elif isinstance(spec.data, dict):
        path, eval_data = None, coerce(EvalData, spec.data, "data")
        split = eval_data.split
    else:
        path = (base_dir / spec.data).resolve()
    fields = dataclasses.asdict(spec) | {
        "data": path, "dataset": dataset, "split": split, "source": source, "eval_data": eval_data,
        "base_dir": base_dir,
        "media_root": (base_dir / spec.media_root).resolve() if spec.media_root else None,
        "generation": {"max_new_tokens": 32, "temperature": 0, **spec.generation},
    }
    return Task(**fields)


def load_task(name_or_path: str | Path) -> Task:
    """A built-in task by name (see :func:`builtin_tasks`) or a task YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = BUILTIN_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            path = BENCHMARK_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise TaskError(f"unknown task {str(name_or_path)!r}; built-in tasks: {', '.join(builtin_tasks())}; "
                            f"benchmarks: {', '.join(benchmark_tasks())}; or give the path of a task YAML file")
    if not path.is_file():
        raise TaskError(f"task file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise TaskError(f"task {path}: not valid YAML: {error}") from None
    return parse_task(raw, str(path), path.parent)


def ensure_data(task: Task) -> Path:
    """The task's JSONL file, building its dataset first when it is missing."""
    if task.data is None:
        raise TaskError(f"task {task.source} reads a dataset source, not a JSONL file")
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
