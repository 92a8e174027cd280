"""Benchmark data from the hub (or the same data saved locally): rows → evaluation Records.

A task's ``data`` mapping names the dataset and what each column is::

    data:
      hub: lmms-lab/VQAv2            # or path: a parquet file / `datasets` directory / JSON(L) file
      split: validation
      columns: {images: image, text: question, id: question_id}
      fields: {answers: "answers[].answer", category: answer_type}
      choices: {options: choices, answer: answer}   # multiple choice: options list + gold (index or letter)
      join: {name: testdev_balanced_images, split: testdev, key: id, by: imageId}   # GQA keeps images apart
      filter: {question_type: multiple-choice}      # keep only the rows whose column has that value

Every non-media column of a row is a record field (usable in the prompt as ``{column}``); ``fields``
adds derived ones (``a[].b`` takes ``b`` of each item of list ``a``). With ``choices`` the record gets
``choices`` (the option texts), ``options`` (``A. ...\\nB. ...``, for the prompt) and ``answer`` (the gold
letter). Rows are read raw from Arrow (media stay bytes) and only the first ``limit`` are read.
"""

from __future__ import annotations

import ast
import dataclasses
import logging
from pathlib import Path
from typing import Any

from omnilm.configkit import require
from omnilm.data.columns import MEDIA_COLUMNS, media_value
from omnilm.data.records import Record
from omnilm.errors import OmniError
from omnilm.metrics.choice import format_options, option_letters

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class EvalColumns:
    images: str | list[str] | None = None  # one column, or several (MMMU's image_1 … image_7; empty ones skipped)
    audios: str | list[str] | None = None
    videos: str | list[str] | None = None  # bytes, or paths relative to `media_root` (MVBench's extracted videos)
    text: str | None = None  # the question: {text} in the prompt
    id: str | None = None


@dataclasses.dataclass
class ChoiceSpec:
    options: str  # column with the option texts (a list, or its Python/JSON text as in MMMU)
    answer: str  # column with the gold option: an index (ScienceQA), a letter (MMMU) or its text (MVBench)


@dataclasses.dataclass
class JoinSpec:
    key: str  # the joined dataset's id column
    by: str  # this dataset's column holding that id
    name: str | None = None
    split: str | None = None  # default: the task's split
    columns: list[str] = dataclasses.field(default_factory=lambda: ["image"])  # columns taken from the match


@dataclasses.dataclass
class EvalData:
    hub: str | None = None
    path: str | None = None
    name: str | None = None
    split: str = "test"
    columns: EvalColumns = dataclasses.field(default_factory=EvalColumns)
    fields: dict[str, str] = dataclasses.field(default_factory=dict)
    choices: ChoiceSpec | None = None
    join: JoinSpec | None = None
    filter: dict[str, str] = dataclasses.field(default_factory=dict)  # keep rows whose column equals the value
    media_root: str | None = None  # path-valued media resolve here; relative: under $OMNILM_DATA

    def validate(self, path: str = "data") -> None:
        require((self.hub is None) != (self.path is None), path, "give exactly one of hub or path")

    @property
    def label(self) -> str:
        return (self.hub or str(self.path)) + (f"/{self.name}" if self.name else "") + f"[{self.split}]"


def _load(data: EvalData, base_dir: Path, name: str | None, split: str):
    import datasets

    try:
        if data.hub is not None:
            return datasets.load_dataset(data.hub, name, split=split)
        path = (base_dir / data.path).resolve()
        if path.is_dir():
            loaded = datasets.load_from_disk(str(path))
            return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        kind = "parquet" if path.suffix == ".parquet" else "json"
        return datasets.load_dataset(kind, data_files=[str(path)], split="train")
    except (FileNotFoundError, KeyError, ValueError, ConnectionError, OSError) as error:
        raise OmniError(f"could not load {data.label}: {error}") from error


def _pluck(row: dict[str, Any], spec: str) -> Any:
    """``a``, ``a.b`` or ``a[].b`` of a row."""
    head, _, rest = spec.partition(".")
    many = head.endswith("[]")
    value = row[head.removesuffix("[]")]
    if not rest:
        return value
    if many:
        return [_pluck(item, rest) for item in value]
    return _pluck(value, rest)


def _options(value: Any) -> list[str]:
    if isinstance(value, str):
        value = ast.literal_eval(value)  # MMMU stores the list as its Python text
    if not isinstance(value, list) or not value:
        raise ValueError(f"options must be a non-empty list, got {value!r}")
    return [str(v) for v in value]


def load_eval_records(data: EvalData, base_dir: Path, limit: int | None = None) -> list[Record]:
    """The first `limit` rows of the task's dataset as Records (errors name the dataset and row)."""
    dataset = _load(data, base_dir, data.name, data.split)
    columns = dataset.column_names + (data.join.columns if data.join else [])
    named = [(role, c) for role, col in dataclasses.asdict(data.columns).items() if col
             for c in (col if isinstance(col, list) else [col])]
    derived = [(f"fields.{k}", v.split(".")[0].removesuffix("[]")) for k, v in data.fields.items()]
    for role, column in [*named, *derived, *((f"filter.{c}", c) for c in data.filter)]:
        if column not in columns:
            raise OmniError(f"{data.label}: columns.{role} names column {column!r}, which it does not have; "
                            f"its columns are {', '.join(columns)}")
    joined = _joined(data, base_dir) if data.join else None
    table = dataset.with_format("arrow")
    rows = range(len(table))
    if data.filter:  # the filter columns only are read to choose the rows
        values = {c: table[c].to_pylist() for c in data.filter}
        rows = [i for i in rows if all(str(values[c][i]) == str(v) for c, v in data.filter.items())]
    root = _media_root(data)
    records = []
    for index in list(rows)[:limit]:
        row = table[index].to_pylist()[0]
        try:
            if joined is not None:
                row.update(joined(row))
            records.append(_record(row, data, index, root))
        except (KeyError, ValueError, SyntaxError) as error:
            raise OmniError(f"{data.label} row {index}: {error}") from None
    return records


def _media_root(data: EvalData) -> Path:
    from omnilm.evaluation.tasks import data_root

    root = Path(data.media_root) if data.media_root else data_root()
    return root if root.is_absolute() else data_root() / root


def _joined(data: EvalData, base_dir: Path):
    """A function giving, for a row, the `join.columns` of the joined dataset's matching row."""
    spec = data.join
    other = _load(data, base_dir, spec.name, spec.split or data.split)
    keys = other.with_format("arrow")[spec.key].to_pylist()  # ids only: the images stay on disk
    position = {key: i for i, key in enumerate(keys)}
    table = other.with_format("arrow")

    def lookup(row: dict[str, Any]) -> dict[str, Any]:
        if row[spec.by] not in position:
            raise KeyError(f"{spec.by}={row[spec.by]!r} has no match in {spec.name or data.label}")
        match = table[position[row[spec.by]]].to_pylist()[0]
        return {column: match[column] for column in spec.columns}

    return lookup


def _is_media(value: Any) -> bool:
    if isinstance(value, list):
        return bool(value) and _is_media(value[0])
    return isinstance(value, bytes) or (isinstance(value, dict) and "bytes" in value)


def _record(row: dict[str, Any], data: EvalData, index: int, media_root: Path) -> Record:
    parts: list[dict] = []
    media_columns = set()
    for role, kind in MEDIA_COLUMNS.items():
        names = getattr(data.columns, role) or []
        for column in names if isinstance(names, list) else [names]:
            media_columns.add(column)
            value = row[column]
            for item in value if isinstance(value, list) else [] if value is None else [value]:
                item = media_value(item)
                parts.append({"type": kind, kind: str(media_root / item) if isinstance(item, str) else item})
    text = str(row[data.columns.text]) if data.columns.text else ""
    fields = {k: v for k, v in row.items() if k not in media_columns and not _is_media(v)}
    fields.update({name: _pluck(row, spec) for name, spec in data.fields.items()})
    if data.choices is not None:
        options = _options(row[data.choices.options])
        gold = row[data.choices.answer]
        letters = option_letters(options)
        if isinstance(gold, int) or str(gold).isdigit():
            letter = letters[int(gold)]
        else:
            letter = letters[options.index(str(gold))] if str(gold) in options else str(gold).strip()
        if letter not in letters:
            raise ValueError(f"answer {gold!r} is not one of the {len(options)} options")
        fields.update(choices=options, options=format_options(options), answer=letter)
    answer = fields.get("answer", fields.get("answers", ""))
    answer = answer[0] if isinstance(answer, list) and answer else answer
    record_id = str(row[data.columns.id]) if data.columns.id else str(index)
    messages = [{"role": "user", "content": parts + [{"type": "text", "text": text}]},
                {"role": "assistant", "content": [{"type": "text", "text": str(answer)}]}]
    category = fields.get("category")
    return Record(record_id, messages, None if category is None else str(category), fields, index + 1)
