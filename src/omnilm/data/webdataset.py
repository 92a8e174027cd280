"""WebDataset tar shards: samples are the members sharing a key (``{key}.jpg`` + ``{key}.json`` / ``{key}.txt``).

Each shard's member headers are read once (no data) and the byte offsets of every member cached under
``$OMNILM_CACHE/data-index``; a sample is then read with one seek per member. A sample's row maps each
extension to its content (media as bytes, ``.txt`` as text, ``.json`` decoded and its fields merged in),
so a column spec names extensions or JSON fields: ``{images: jpg, answer: txt}``. Without a spec, the
first image/audio/video member is the media and the turns are the JSON's ``conversations`` (interleaved
LLaVA records in tars), else the caption (``.txt``, or the JSON's ``caption``) after the source's prompt.

A shard that cannot be read (not a tar, truncated) stops the run, or with ``on_error: skip`` is left out
and reported (``source.skipped``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from omnilm.data.columns import ColumnSpec, row_to_record
from omnilm.data.index import read_span, reopen
from omnilm.data.sources import Source, SourceSpec
from omnilm.errors import OmniError
from omnilm.io import atomic_write_text
from omnilm.paths import cache_dir

logger = logging.getLogger(__name__)

MEDIA_EXTENSIONS = {"image": ("jpg", "jpeg", "png", "webp"), "audio": ("wav", "flac", "mp3"),
                    "video": ("mp4", "webm", "avi")}


def _split_name(name: str) -> tuple[str, str]:
    """(key, extension) of a member name as WebDataset splits it: at the first dot of the basename."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def index_shard(path: Path, cache: Path) -> dict[str, Any]:
    """{"keys": [...], "members": {key: {ext: [offset, size]}}} of one shard, cached by path, size, mtime."""
    stat = path.stat()
    key = hashlib.sha256(f"tar|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:32]
    cached = cache / f"{key}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    members: dict[str, dict[str, list[int]]] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                if info.offset_data + info.size > stat.st_size:
                    raise OmniError(f"{path}: truncated in member {info.name}")
                sample, ext = _split_name(info.name)
                members.setdefault(sample, {})[ext] = [info.offset_data, info.size]
    except (tarfile.TarError, EOFError, OSError) as error:
        raise OmniError(f"{path}: not a readable tar shard ({error})") from None
    index = {"keys": list(members), "members": members}
    atomic_write_text(cached, json.dumps(index))
    return index


class TarSource(Source):
    """Samples of one or more tar shards, in shard order then member order."""

    def __init__(self, spec: SourceSpec, shards: list[Path], *, on_error: str = "stop",
                 index_dir: Path | None = None) -> None:
        self.spec, self.skipped = spec, []
        self.media_root = Path(spec.media_root) if spec.media_root else shards[0].parent
        cache = index_dir or cache_dir("data-index")
        self.shards, self.indexes = [], []
        for shard in shards:
            try:
                self.indexes.append(index_shard(shard, cache))
                self.shards.append(shard)
            except OmniError as error:
                if on_error == "stop":
                    raise OmniError(f"{error}; fix or remove the shard, or set data.on_error: skip") from None
                logger.warning("skipping shard: %s", error)
                self.skipped.append(str(error))
        if not self.shards:
            raise OmniError(f"{spec.path}: no readable shard")
        self.bounds = np.cumsum([0] + [len(index["keys"]) for index in self.indexes])  # (S + 1,)
        self._handles: dict = {}

    def __len__(self) -> int:
        return int(self.bounds[-1])

    def _locate(self, index: int) -> tuple[int, str]:
        shard = int(np.searchsorted(self.bounds, index, side="right")) - 1
        return shard, self.indexes[shard]["keys"][index - int(self.bounds[shard])]

    def where(self, index: int) -> str:
        shard, key = self._locate(index)
        return f"{self.shards[shard]}:{key}"

    def row(self, index: int) -> dict[str, Any]:
        shard, key = self._locate(index)
        handle = reopen(self.shards[shard], self._handles)
        row: dict[str, Any] = {"__key__": key}
        for ext, (offset, size) in self.indexes[shard]["members"][key].items():
            data = read_span(handle, offset, offset + size)
            if len(data) != size:
                raise ValueError(f"member {key}.{ext} is cut short ({len(data)} of {size} bytes): the shard changed")
            if ext == "json":
                row.update(json.loads(data))
            elif ext in ("txt", "text", "caption"):
                row[ext] = data.decode("utf-8").strip()
            else:
                row[ext] = data
        return row

    def raw(self, index: int) -> dict[str, Any]:
        row = self.row(index)
        spec = self.spec.columns or _default_columns(row)
        return row_to_record(row, spec, index, self.spec.prompt) | {"id": row["__key__"]}


def _default_columns(row: dict[str, Any]) -> ColumnSpec:
    """Media: the first member of each kind; turns: the JSON's conversations, else the caption."""
    media = {}
    for kind, extensions in MEDIA_EXTENSIONS.items():
        found = [ext for ext in extensions if ext in row]
        if found:
            media[kind + "s"] = found[0]
    if "conversations" in row:
        return ColumnSpec(**media, conversations="conversations")
    caption = "txt" if "txt" in row else "caption" if "caption" in row else None
    if caption is None:
        raise ValueError("a sample needs a .txt caption, a JSON caption or JSON conversations; "
                         f"it has {', '.join(sorted(k for k in row if k != '__key__'))}")
    return ColumnSpec(**media, answer=caption)
