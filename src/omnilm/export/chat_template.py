"""Chat templates for exported processors: the model's own template, taking content-part lists as well (as
transformers' processors and vLLM send them), rendered to exactly the text omnilm's processor builds."""

from __future__ import annotations

import json

PART_TYPES = {  # content-part types that stand for one media item of each modality
    "image": ("image", "image_url"),
    "audio": ("audio", "audio_url", "input_audio"),
    "video": ("video", "video_url"),
}


def parts_template(template: str, *, placeholders: dict[str, str], system_prompt: str | None) -> str:
    """`template` taking content-part lists too (as Llava's processors and vLLM send them): each message's
    parts become omnilm's text, parts joined by newlines with a placeholder per media part, and the model's
    default system turn is added where omnilm adds it."""
    media = "".join(
        f"{{%- elif part['type'] in {list(PART_TYPES[m])} %}}{{%- set ns.pieces = ns.pieces + [{json.dumps(p)}] %}}"
        for m, p in placeholders.items()
    )
    prelude = (
        "{%- set ns = namespace(messages=[], pieces=[]) %}"
        "{%- for message in messages %}"
        "{%- if message['content'] is string %}{%- set ns.messages = ns.messages + [message] %}"
        "{%- else %}{%- set ns.pieces = [] %}{%- for part in message['content'] %}"
        "{%- if part['type'] == 'text' %}{%- set ns.pieces = ns.pieces + [part['text']] %}"
        f"{media}{{%- endif %}}{{%- endfor %}}"
        "{%- set ns.messages = ns.messages + [{'role': message['role'], 'content': ns.pieces | join('\\n')}] %}"
        "{%- endif %}{%- endfor %}"
    )
    if system_prompt is not None:
        prelude += (
            "{%- if not ns.messages or ns.messages[0]['role'] != 'system' %}"
            f"{{%- set ns.messages = [{{'role': 'system', 'content': {json.dumps(system_prompt)}}}] + ns.messages %}}"
            "{%- endif %}"
        )
    return prelude + "{%- set messages = ns.messages %}" + template


def text_template(template: str, image_token: str) -> str:
    """`template` (which reads content parts) fed omnilm's text content: each message's text is cut at the image
    token into text and image parts, the newline omnilm puts between parts taken off again."""
    token = json.dumps(image_token)
    prelude = (
        "{%- set ns = namespace(messages=[]) %}"
        "{%- for message in messages %}"
        "{%- if message['content'] is string %}{%- set parts = namespace(items=[]) %}"
        f"{{%- set chunks = message['content'].split({token}) %}}"
        "{%- for chunk in chunks %}"
        "{%- if not loop.first %}{%- set parts.items = parts.items + [{'type': 'image'}] %}{%- endif %}"
        "{%- set text = chunk[1:] if not loop.first and chunk.startswith('\\n') else chunk %}"
        "{%- set text = text[:-1] if not loop.last and text.endswith('\\n') else text %}"
        "{%- if text %}{%- set parts.items = parts.items + [{'type': 'text', 'text': text}] %}{%- endif %}"
        "{%- endfor %}"
        "{%- set ns.messages = ns.messages + [{'role': message['role'], 'content': parts.items}] %}"
        "{%- else %}{%- set ns.messages = ns.messages + [message] %}{%- endif %}"
        "{%- endfor %}{%- set messages = ns.messages %}"
    )
    return prelude + template
