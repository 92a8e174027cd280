"""Column specs: which columns of a dataset row hold the media and the turns, turned into a LLaVA-shape record.

A row of a hub dataset, a parquet file or a WebDataset sample becomes the record shape
:func:`omnilm.data.records.parse_record` reads (``image``/``audio``/``video`` lists and ``conversations``),
with media as bytes where the row holds the file. The turns come from one of:

- ``conversations``: LLaVA turns ``[{from, value}]`` with ``<image>`` placeholders (LLaVA-OneVision-Data);
- ``messages``: OpenAI turns ``[{role, content}]``;
- ``texts``: the-Cauldron turns ``[{user, assistant, source}]`` (its ``images`` open the first user turn);
- ``question`` + ``answer`` (or ``answer`` alone, for captions and transcripts), with ``prompt`` as the user
  text when there is no question column: ``{images: image, answer: caption}`` or ``{audios: audio, answer: text}``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from omnilm.configkit import require
from omnilm.errors import OmniError

MEDIA_COLUMNS = {"images": "image", "audios": "audio", "videos": "video"}
TURN_COLUMNS = ("conversations", "messages", "texts")


@dataclasses.dataclass
class ColumnSpec:
    images: str | None = None  # an image ({bytes, path} struct, path, PIL image) or a list of them
    audios: str | None = None  # the `datasets` Audio feature ({bytes, path}) or a path, or a list
    videos: str | None = None  # a video file's bytes or path, or a list
    conversations: str | None = None  # LLaVA turns [{from, value}]
    messages: str | None = None  # OpenAI turns [{role, content}]
    texts: str | None = None  # the-Cauldron turns [{user, assistant, source}]
    question: str | None = None  # the user's text
    answer: str | None = None  # the assistant's text (a list: the first is trained on)
    id: str | None = None  # a column of record ids (default: the row number)

    def validate(self, path: str = "columns") -> None:
        turns = [name for name in TURN_COLUMNS if getattr(self, name)]
        require(len(turns) <= 1, path, f"name one of {', '.join(TURN_COLUMNS)}, not {turns}")
        require(bool(turns) or self.answer is not None, path,
                "name the turns (conversations, messages or texts) or an answer column")
        require(not (turns and (self.question or self.answer)), path,
                f"{turns[0] if turns else ''} holds the whole conversation: drop question/answer")

    def used(self) -> dict[str, str]:
        """role → column name, for the roles this spec names."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name)}


def check_columns(spec: ColumnSpec, available: list[str], source: str) -> None:
    """A clear error when the spec names a column the data does not have."""
    for role, column in spec.used().items():
        if column not in available:
            raise OmniError(f"{source}: columns.{role} names column {column!r}, which the data does not have; "
                            f"its columns are {', '.join(available)}")


def media_value(value: Any) -> Any:
    """One media item as a record holds it: bytes, or a path (a `datasets` {bytes, path} struct gives its bytes)."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        if value.get("path"):
            return str(value["path"])
        raise ValueError(f"a media struct without bytes or path: keys {sorted(value)}")
    if hasattr(value, "save"):  # a decoded PIL image
        import io

        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return buffer.getvalue()
    if isinstance(value, (bytes, str)):
        return value
    raise ValueError(f"cannot read a media item of type {type(value).__name__}")


def row_to_record(row: dict[str, Any], spec: ColumnSpec, index: int, prompt: str = "") -> dict[str, Any]:
    """The LLaVA-shape record of one row (see the module docstring)."""
    record: dict[str, Any] = {"id": str(row[spec.id]) if spec.id else str(index)}
    placeholders = ""
    for role, kind in MEDIA_COLUMNS.items():
        column = getattr(spec, role)
        if column is None:
            continue
        value = row[column]
        items = [] if value is None else value if isinstance(value, list) else [value]
        record[kind] = [media_value(v) for v in items]
        placeholders += f"<{kind}>" * len(items)
    if spec.conversations:
        record["conversations"] = row[spec.conversations]
    elif spec.messages:
        record["messages"] = row[spec.messages]
    elif spec.texts:
        record["conversations"] = _cauldron_turns(row[spec.texts], placeholders)
    else:
        question = str(row[spec.question]) if spec.question else prompt
        answer = row[spec.answer]
        answer = answer[0] if isinstance(answer, list) and answer else answer
        if not isinstance(answer, str):
            raise ValueError(f"column {spec.answer!r} must hold text, got {type(answer).__name__}")
        separator = "\n" if placeholders and question else ""
        record["conversations"] = [{"from": "human", "value": placeholders + separator + question},
                                   {"from": "gpt", "value": answer}]
    return record


def _cauldron_turns(texts: Any, placeholders: str) -> list[dict[str, str]]:
    """the-Cauldron ``texts`` → LLaVA turns; the row's media open the first user turn."""
    if not isinstance(texts, list) or not texts:
        raise ValueError("texts must be a non-empty list of {user, assistant} turns")
    turns = []
    for i, turn in enumerate(texts):
        if not isinstance(turn, dict) or "user" not in turn or "assistant" not in turn:
            raise ValueError(f"texts[{i}] needs \"user\" and \"assistant\"")
        user = (placeholders + "\n" if i == 0 and placeholders else "") + str(turn["user"])
        turns += [{"from": "human", "value": user}, {"from": "gpt", "value": str(turn["assistant"])}]
    return turns
