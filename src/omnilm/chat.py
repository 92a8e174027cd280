"""Normalising conversations: messages with content parts → template-ready text + ordered media."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

from omnilm.errors import OmniError, PlaceholderMismatchError

ROLES = ("system", "user", "assistant", "tool")  # tool: a function's result, answering an assistant's tool call
TOOL_KEYS = ("tool_calls", "tool_call_id", "name")  # passed through to the chat template as they are
PART_TYPES = {"text": "text", "image": "image", "image_url": "image", "audio": "audio", "input_audio": "audio",
              "video": "video", "video_url": "video"}  # a content part's type → what it carries


@dataclass
class Conversation:
    messages: list[dict[str, str]]  # {"role", "content"}: content is text with placeholders
    media: list[tuple[str, Any]] = field(default_factory=list)  # (modality, item) in order of appearance
    tools: list[dict] | None = None  # OpenAI-style function tools, rendered by the chat template


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
        extra = {k: message[k] for k in TOOL_KEYS if k in message}
        messages.append({"role": message["role"], "content": text, **extra})
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
        modality, value = parse_part(part, f"message {index}")
        if modality == "text":
            pieces.append(value)
            continue
        if modality not in placeholders:
            raise OmniError(f"message {index}: this model does not take {modality} input")
        from_parts[modality].append(value)
        pieces.append(placeholders[modality])
    return "\n".join(pieces)


def parse_part(part: Any, where: str) -> tuple[str, Any]:
    """One content part, omnilm's or OpenAI's, as (modality, value); OmniError naming `where` if malformed.

    modality is "text" (value: the text) or image / audio / video, whose value is the item as given (a path,
    URL, PIL image, bytes or (samples, rate)), the URL of an image_url / video_url part (a ``{"url": ...}``
    mapping stands for its URL), or the base64-decoded bytes of an input_audio part.
    """
    kind = part.get("type") if isinstance(part, dict) else None
    if kind not in PART_TYPES:
        raise OmniError(f"{where}: unknown content part type {kind!r}; use text, image, audio or video (or OpenAI's "
                        "image_url, input_audio, video_url)")
    value = part.get(kind)
    if kind == "text":
        if not isinstance(value, str):
            raise OmniError(f"{where}: a text part needs a 'text' string")
    elif kind == "input_audio":
        if not isinstance(value, dict) or not isinstance(value.get("data"), str):
            raise OmniError(f"{where}: input_audio needs {{'data': base64 string, 'format': 'wav'}}")
        try:
            value = base64.b64decode(value["data"], validate=True)
        except ValueError:  # binascii.Error is a ValueError
            raise OmniError(f"{where}: input_audio data is not valid base64") from None
    elif kind.endswith("_url"):
        value = value.get("url") if isinstance(value, dict) else value
        if not isinstance(value, str) or not value:
            raise OmniError(f"{where}: the {kind} part needs {{'url': 'data:...;base64,...'}}")
    elif isinstance(value, dict) and "url" in value:  # e.g. {"type": "video", "video": {"url": ...}}
        value = value["url"]
    elif value is None:
        raise OmniError(f"{where}: the {kind} part has no {kind!r} field")
    return PART_TYPES[kind], value


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
