"""Normalising conversations: messages with content parts → template-ready text + ordered media."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

from omnilm.errors import OmniError, PlaceholderMismatchError

ROLES = ("system", "user", "assistant")
PART_MODALITY = {"image": "image", "image_url": "image", "audio": "audio", "input_audio": "audio", "video": "video",
                 "video_url": "video"}


@dataclass
class Conversation:
    messages: list[dict[str, str]]  # {"role", "content"}: content is text with placeholders
    media: list[tuple[str, Any]] = field(default_factory=list)  # (modality, item) in order of appearance


def normalize_conversation(
    conversation: Any,
    placeholders: dict[str, str],
    *,
    images: list | None = None,
    audios: list | None = None,
    videos: list | None = None,
) -> Conversation:
    """Check roles and content, turn media parts into placeholders, and pair each placeholder with its item."""
    if isinstance(conversation, Conversation):
        return conversation
    if isinstance(conversation, str):
        conversation = [{"role": "user", "content": conversation}]
    if not isinstance(conversation, list) or not conversation:
        raise OmniError("a conversation must be a non-empty list of {'role', 'content'} messages or a prompt string")
    given = {"image": list(images or []), "audio": list(audios or []), "video": list(videos or [])}
    from_parts: dict[str, list] = {"image": [], "audio": [], "video": []}
    messages = []
    for index, message in enumerate(conversation):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise OmniError(f"message {index} must be a mapping with 'role' and 'content'")
        if message["role"] not in ROLES:
            raise OmniError(f"message {index}: role {message['role']!r} is not one of {ROLES}")
        text = _content_text(message["content"], placeholders, from_parts, index)
        messages.append({"role": message["role"], "content": text})
    if any(from_parts.values()) and any(given.values()):
        raise OmniError("give media either as content parts or as images=/audios=/videos=, not both")
    queues = {m: (from_parts[m] or given[m]) for m in given}
    return Conversation(messages, _pair_media(messages, placeholders, queues))


def _content_text(content: Any, placeholders: dict[str, str], from_parts: dict[str, list], index: int) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise OmniError(f"message {index}: content must be a string or a list of parts")
    pieces = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            pieces.append(str(part.get("text", "")))
        elif kind in PART_MODALITY:
            modality = PART_MODALITY[kind]
            if modality not in placeholders:
                raise OmniError(f"message {index}: this model does not take {modality} input")
            from_parts[modality].append(_part_item(part, kind, index))
            pieces.append(placeholders[modality])
        else:
            raise OmniError(f"message {index}: unknown content part type {kind!r}; use text, image, audio or video")
    return "\n".join(pieces)


def _part_item(part: dict, kind: str, index: int) -> Any:
    value = part.get(kind)
    if kind in ("image_url", "video_url"):
        value = value.get("url") if isinstance(value, dict) else value
    elif kind == "input_audio":
        if not isinstance(value, dict) or "data" not in value:
            raise OmniError(f"message {index}: input_audio needs {{'data': base64, 'format': ...}}")
        try:
            value = base64.b64decode(value["data"], validate=True)
        except ValueError:
            raise OmniError(f"message {index}: input_audio data is not valid base64") from None
    if value is None:
        raise OmniError(f"message {index}: the {kind} part has no {kind!r} field")
    return value


def _pair_media(messages: list[dict], placeholders: dict[str, str], queues: dict[str, list]) -> list[tuple[str, Any]]:
    for modality, items in queues.items():
        if items and modality not in placeholders:
            raise OmniError(f"this model does not take {modality} input; it takes {sorted(placeholders) or 'text only'}")
    by_string = {p: m for m, p in placeholders.items()}
    if not by_string:
        return []
    pattern = re.compile("|".join(re.escape(p) for p in by_string))
    order = [by_string[m.group(0)] for msg in messages for m in pattern.finditer(msg["content"])]
    for modality, items in queues.items():
        found = order.count(modality)
        if found != len(items):
            raise PlaceholderMismatchError(
                f"the text has {found} {modality} placeholder(s) ({placeholders.get(modality, '<' + modality + '>')}) "
                f"but {len(items)} {modality} item(s) were given; put one placeholder where each {modality} belongs"
            )
    taken = {m: iter(items) for m, items in queues.items()}
    return [(modality, next(taken[modality])) for modality in order]
