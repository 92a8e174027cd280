"""Read and validate JSONL conversation records in the two accepted shapes, returning omnilm messages.

LLaVA shape (media paths in ``image`` / ``audio`` / ``video``, a path or a list of paths)::

    {"id": "q1", "image": "images/0.png", "conversations": [
        {"from": "human", "value": "<image>\\nWhat shape is this?"}, {"from": "gpt", "value": "circle"}]}

OpenAI / LLaMA-Factory shape (placeholders in string content with top-level media lists, or content parts)::

    {"id": "q1", "messages": [{"role": "user", "content": "<image>What shape is this?"},
                              {"role": "assistant", "content": "circle"}], "images": ["images/0.png"]}
    {"messages": [{"role": "user", "content": [{"type": "image", "image": "images/0.png"},
                                               {"type": "text", "text": "What shape is this?"}]}, ...]}

Media paths are relative to ``media_root`` (default: the JSONL file's folder). Every record is checked
before any is returned; problems are reported together, each as ``file:line: what is wrong``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omnilm.chat import parse_part
from omnilm.config import MODALITIES
from omnilm.errors import OmniError
from omnilm.io import atomic_write_text

PLACEHOLDER = re.compile(r"<(image|audio|video)>")
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
          "model": "assistant"}
_MAX_REPORTED = 20
_TURN_KEYS = {"conversations": ("from", "value", "turns"), "messages": ("role", "content", "messages")}


class RecordError(OmniError):
    """One or more JSONL records are invalid; the message lists ``file:line: problem`` for each."""


@dataclass
class Record:
    """One validated conversation: omnilm ``messages`` (media parts hold absolute paths) plus its fields."""

    id: str
    messages: list[dict]
    category: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # the raw record's other keys (e.g. "answers")
    line: int = 0

    @property
    def prompt(self) -> list[dict]:
        """The conversation up to (not including) its final assistant turn."""
        last = max(i for i, m in enumerate(self.messages) if m["role"] == "assistant")
        return self.messages[:last]

    @property
    def answer(self) -> str:
        """Text of the final assistant turn (the reference answer)."""
        last = [m for m in self.messages if m["role"] == "assistant"][-1]
        return "".join(part["text"] for part in last["content"] if part["type"] == "text")


def _media_list(raw: dict, key: str) -> list:
    """A record's media of one kind: paths (or data URLs), or bytes where a dataset row holds the file."""
    value = raw.get(key, raw.get(key + "s", []))
    if isinstance(value, (str, bytes)):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, bytes)) for v in value):
        shown = repr(value) if len(repr(value)) < 200 else f"a {type(value).__name__}"
        raise ValueError(f'"{key}" must be a path or a list of paths, got {shown}')
    return value


def _split_placeholders(text: str, queues: dict[str, list], line_media: dict[str, int]) -> list[dict]:
    """Turn ``"<image>\\nWhat?"`` into parts, taking media from ``queues`` in order."""
    parts: list[dict] = []
    position = 0
    for match in PLACEHOLDER.finditer(text):
        if match.start() > position:
            parts.append({"type": "text", "text": text[position : match.start()]})
        kind = match.group(1)
        line_media[kind] += 1
        if queues[kind]:
            parts.append({"type": kind, kind: queues[kind].pop(0)})
        position = match.end()
    if position < len(text):
        parts.append({"type": "text", "text": text[position:]})
    return parts


def _media_path(item: str, media_root: Path) -> str:
    """Data URLs pass through; paths are made absolute against the media root."""
    return item if item.startswith("data:") else str(media_root / item)


def _turns(raw: dict) -> list[tuple[str, Any]]:
    """(speaker, content) of each turn of a LLaVA-shape or an OpenAI-shape record."""
    for key, (who, what, noun) in _TURN_KEYS.items():
        if key not in raw:
            continue
        turns = raw[key]
        if not isinstance(turns, list) or not turns:
            raise ValueError(f'"{key}" must be a non-empty list of {{"{who}", "{what}"}} {noun}')
        for i, turn in enumerate(turns):
            if not isinstance(turn, dict) or who not in turn or what not in turn:
                raise ValueError(f'{key}[{i}] needs "{who}" and "{what}"')
        return [(turn[who], turn[what]) for turn in turns]
    raise ValueError('a record needs "conversations" (LLaVA shape) or "messages" (OpenAI shape)')


def parse_record(raw: Any, media_root: Path, index: int) -> Record:
    """Validate one decoded JSON record; raises ValueError naming the problem."""
    if not isinstance(raw, dict):
        raise ValueError(f"a record must be a JSON object, got {type(raw).__name__}")
    queues = {kind: [p if isinstance(p, bytes) else _media_path(p, media_root) for p in _media_list(raw, kind)]
              for kind in MODALITIES}
    declared = {kind: len(queue) for kind, queue in queues.items()}
    placed = dict.fromkeys(MODALITIES, 0)
    messages = []
    for position, (role_name, content) in enumerate(_turns(raw)):
        role = _ROLES.get(role_name)
        if role is None:
            raise ValueError(f"turn {position}: unknown role {role_name!r}; use one of {', '.join(sorted(_ROLES))}")
        if isinstance(content, str):
            parts = _split_placeholders(content, queues, placed)
        elif isinstance(content, list):
            parts = []
            for part in content:
                modality, item = parse_part(part, f"turn {position}")
                if modality == "text":
                    parts.extend(_split_placeholders(item, queues, placed))
                    continue
                if isinstance(item, str):
                    item = _media_path(item, media_root)
                elif not isinstance(item, bytes):  # bytes: decoded input_audio
                    raise ValueError(f"turn {position}: a {modality} part needs a file path or a data URL")
                parts.append({"type": modality, modality: item})
                placed[modality] += 1
                declared[modality] += 1
        else:
            raise ValueError(f"turn {position}: content must be a string or a list of parts")
        messages.append({"role": role, "content": parts})
    for kind in MODALITIES:
        if placed[kind] != declared[kind]:
            raise ValueError(f"{placed[kind]} <{kind}> placeholder(s) but {declared[kind]} {kind} file(s)")
    for message in messages:
        for part in message["content"]:
            item = part.get(part["type"])
            if part["type"] in MODALITIES and isinstance(item, str) and not item.startswith("data:") and \
                    not Path(item).is_file():
                raise ValueError(f"{part['type']} file not found: {part[part['type']]}")
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("no assistant turn (the answer); add a gpt/assistant turn")
    if messages[-1]["role"] != "assistant":
        raise ValueError("the last turn must be the assistant's answer")
    known = {"id", "conversations", "messages", "category", *MODALITIES, *(k + "s" for k in MODALITIES)}
    extra = {k: v for k, v in raw.items() if k not in known}
    category = raw.get("category")
    return Record(str(raw.get("id", index)), messages, None if category is None else str(category), extra, index + 1)


def _raw_records(path: Path):
    """(index, line, where, decoded JSON or the ValueError of a malformed one) of each record of a file."""
    from omnilm.data.sources import JsonSource, SourceSpec, json_kind

    if json_kind(path) == "json":
        source = JsonSource(SourceSpec(path=str(path)), path)
        for index in range(len(source)):
            try:
                raw = source.row(index)
            except ValueError as error:
                raw = error
            yield index, int(source.offsets[index][2]), source.where(index), raw
        return
    with path.open(encoding="utf-8") as f:
        for index, line in enumerate(f):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as error:
                raw = ValueError(f"malformed JSON ({error.msg} at column {error.colno})")
            yield index, index + 1, f"{path}:{index + 1}", raw


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a JSONL file, as written (not validated; blank lines skipped)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Write ``rows`` as a JSONL file, one object a line (atomically)."""
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def read_records(path: str | Path, media_root: str | Path | None = None, limit: int | None = None) -> list[Record]:
    """Read and validate a JSONL file (or a LLaVA JSON array) of records (the first ``limit`` when given).

    Raises RecordError listing every bad line (``file:line: problem``); duplicate ids are errors too.
    """
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"dataset file not found: {path}")
    root = Path(media_root) if media_root is not None else path.parent
    records, problems, seen = [], [], {}
    for index, line_number, where, raw in _raw_records(path):
        if limit is not None and len(records) + len(problems) >= limit:
            break
        try:
            if isinstance(raw, ValueError):
                raise raw
            record = parse_record(raw, root, index)
        except ValueError as error:
            problems.append(f"{where}: {error}")
            continue
        record.line = line_number
        if record.id in seen:
            problems.append(f"{where}: duplicate id {record.id!r} (first on line {seen[record.id]})")
            continue
        seen[record.id] = line_number
        records.append(record)
    if problems:
        shown = "\n  ".join(problems[:_MAX_REPORTED])
        more = f"\n  ... and {len(problems) - _MAX_REPORTED} more" if len(problems) > _MAX_REPORTED else ""
        raise RecordError(f"{len(problems)} invalid record(s); fix them and run again:\n  {shown}{more}")
    if not records:
        raise RecordError(f"{path} holds no records")
    return records
