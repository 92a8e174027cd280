"""Data sources read by index: JSON/JSONL files, hub datasets and parquet, WebDataset tar shards.

A source is named in a config by a path or a hub id (:class:`SourceSpec`)::

    data:
      train:
        - llava_v1_5_mix665k.json                                  # a LLaVA JSON array (or JSONL)
        - {hub: HuggingFaceM4/the_cauldron, name: ai2d, columns: {images: images, texts: texts}, weight: 0.5}
        - {path: laion/{00000..00099}.tar, prompt: "Describe the image briefly."}   # WebDataset shards
        - {path: librispeech/test.parquet, columns: {audios: audio, answer: text}, prompt: "Transcribe."}

Every source gives ``len(source)``, ``source.raw(i)`` (the LLaVA-shape record of row i, media as paths or
bytes) and ``source.where(i)`` (``file:line``, ``file row N``, ``shard.tar:key``). Nothing is read up front
but an index: byte offsets of JSON records (:mod:`omnilm.data.index`), the Arrow table a `datasets`
dataset maps from disk, the member offsets of tar shards (:mod:`omnilm.data.webdataset`).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
from pathlib import Path
from typing import Any

from omnilm.configkit import check_fields, require
from omnilm.data.columns import ColumnSpec, check_columns, row_to_record
from omnilm.data.index import read_span, record_offsets, reopen
from omnilm.data.records import Record, parse_record
from omnilm.errors import OmniError

logger = logging.getLogger(__name__)

ON_ERROR = ("stop", "skip")


@dataclasses.dataclass
class SourceSpec:
    path: str | None = None  # JSON array / JSONL file, parquet file(s), a `datasets` directory, tar shard(s)
    hub: str | None = None  # a hub dataset id, read with datasets.load_dataset (where the hub is reachable)
    name: str | None = None  # the hub dataset's configuration (e.g. the_cauldron's "ai2d")
    split: str = "train"
    columns: ColumnSpec | None = None  # which columns are media and turns (hub, parquet, tar, and JSON rows)
    prompt: str = ""  # the user's text for rows without one (captions, transcripts)
    weight: float = 1.0  # records drawn per epoch = weight × the source's records (2: twice, 0.5: half)
    media_root: str | None = None  # relative media paths resolve here (default: the file's folder)

    def __post_init__(self) -> None:
        check_fields(self)  # the ranges: validate(path), called where the spec's place in a config is known

    def validate(self, path: str = "source") -> None:
        require((self.path is None) != (self.hub is None), path, "give exactly one of path or hub")
        require(self.weight > 0, f"{path}.weight", f"must be > 0, got {self.weight}")
        if self.columns is not None:
            self.columns.validate(f"{path}.columns")

    @property
    def label(self) -> str:
        return self.hub + (f"/{self.name}" if self.name else "") + f"[{self.split}]" if self.hub else str(self.path)


class Source:
    """Base: rows by index; subclasses set `spec`, `media_root` and implement `__len__`, `row`, `where`."""

    spec: SourceSpec
    media_root: Path
    skipped: list[str]  # shards left out (on_error: skip), as "where: problem"

    def __len__(self) -> int:
        raise NotImplementedError

    def row(self, index: int) -> dict[str, Any]:
        """Row `index` as stored (ValueError when it cannot be read)."""
        raise NotImplementedError

    def where(self, index: int) -> str:
        raise NotImplementedError

    def raw(self, index: int) -> dict[str, Any]:
        row = self.row(index)
        if self.spec.columns is None:
            return row
        return row_to_record(row, self.spec.columns, index, self.spec.prompt)

    def record(self, index: int) -> Record:
        """Row `index` validated (ValueError naming the problem) as an omnilm Record."""
        return parse_record(self.raw(index), self.media_root, index)


class JsonSource(Source):
    """A JSONL file or a JSON array, read record by record through the cached offset index."""

    def __init__(self, spec: SourceSpec, path: Path, *, index_dir: Path | None = None) -> None:
        self.spec, self.path, self.skipped = spec, path, []
        self.media_root = Path(spec.media_root) if spec.media_root else path.parent
        self.kind = json_kind(path)
        self.offsets = record_offsets(path, kind=self.kind, cache=index_dir)  # (N, 3) start, end, line
        self._handles: dict = {}

    def __len__(self) -> int:
        return len(self.offsets)

    def row(self, index: int) -> dict[str, Any]:
        start, end, _ = (int(v) for v in self.offsets[index])
        text = read_span(reopen(self.path, self._handles), start, end)
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"malformed JSON ({error.msg} at column {error.colno})") from None

    def where(self, index: int) -> str:
        """``file:line``; in a JSON array (often one line) also the record's position in it."""
        line = f"{self.path}:{int(self.offsets[index][2])}"
        return line if self.kind == "jsonl" else f"{line} (record {index})"


class HubSource(Source):
    """A `datasets` dataset (hub id, saved directory or parquet files); rows read raw from its Arrow table."""

    def __init__(self, spec: SourceSpec, dataset, label: str) -> None:
        self.spec, self.label, self.skipped = spec, label, []
        self.media_root = Path(spec.media_root) if spec.media_root else Path.cwd()
        if spec.columns is None:
            raise OmniError(f"{label}: a dataset source needs `columns`, e.g. {{images: image, conversations: "
                            f"conversations}}; its columns are {', '.join(dataset.column_names)}")
        check_columns(spec.columns, dataset.column_names, label)
        # Arrow rows as stored: media stay {bytes, path} structs (decoded later, where errors name the row).
        self.table = dataset.with_format("arrow")

    def __len__(self) -> int:
        return len(self.table)

    def row(self, index: int) -> dict[str, Any]:
        return self.table[index].to_pylist()[0]

    def where(self, index: int) -> str:
        return f"{self.label} row {index}"


def json_kind(path: Path) -> str:
    """``json`` for a JSON array, ``jsonl`` otherwise (the first byte that is not whitespace decides)."""
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip()
    return "json" if head.startswith(b"[") else "jsonl"


def _expand(pattern: str) -> list[Path]:
    """Paths of a path, a glob or a brace range (``shards/{00000..00099}.tar``, as WebDataset writes them)."""
    import braceexpand

    found = []
    for item in braceexpand.braceexpand(pattern):
        matches = sorted(glob.glob(item)) if any(c in item for c in "*?[") else [item]
        found += [Path(m) for m in matches]
    return found


def open_source(spec: SourceSpec | str, *, on_error: str = "stop", index_dir: Path | None = None) -> Source:
    """The source a spec (or a plain path) names; a clear error when it cannot be read."""
    spec = SourceSpec(path=spec) if isinstance(spec, str) else spec
    spec.validate()
    if spec.hub is not None:
        import datasets

        try:
            dataset = datasets.load_dataset(spec.hub, spec.name, split=spec.split)
        except Exception as error:  # offline, unknown id, missing config: the library raises many kinds
            raise OmniError(f"could not load hub dataset {spec.label}: {error}") from error
        return HubSource(spec, dataset, spec.label)
    paths = _expand(spec.path) if any(c in spec.path for c in "*?[{") else [Path(spec.path)]
    missing = [p for p in paths if not p.exists()]
    if not paths or missing:
        raise OmniError(f"data source not found: {missing[0] if missing else spec.path}")
    if all(p.suffix == ".tar" for p in paths):
        from omnilm.data.webdataset import TarSource

        return TarSource(spec, paths, on_error=on_error, index_dir=index_dir)
    if all(p.suffix == ".parquet" for p in paths) or paths[0].is_dir():
        return HubSource(spec, _local_dataset(paths, spec), spec.label)
    if len(paths) == 1 and paths[0].suffix in (".json", ".jsonl"):
        return JsonSource(spec, paths[0], index_dir=index_dir)
    raise OmniError(f"{spec.path}: not a data source omnilm reads; give a .json/.jsonl file, .parquet file(s), "
                    f"a `datasets` directory (save_to_disk), .tar shards, or a hub id as {{hub: ID}}")


def _local_dataset(paths: list[Path], spec: SourceSpec):
    import datasets

    if paths[0].is_dir():
        loaded = datasets.load_from_disk(str(paths[0]))
        if isinstance(loaded, datasets.DatasetDict):
            if spec.split not in loaded:
                raise OmniError(f"{paths[0]}: no split {spec.split!r}; it has {', '.join(loaded)}")
            loaded = loaded[spec.split]
        return loaded
    return datasets.load_dataset("parquet", data_files=[str(p) for p in paths], split="train")
