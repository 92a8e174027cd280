"""Evaluate any OpenAI-compatible chat server (``omnilm serve``, vLLM, llama.cpp, a hosted API).

Images are sent as ``image_url`` parts holding data URLs, audio as ``input_audio`` parts (base64 WAV/MP3/FLAC),
video as data URLs in ``video_url`` parts (a common extension) or, when the task sampled its frames, as one
``image_url`` part per frame (as lmms-eval sends video to chat APIs); text as ``text`` parts.
"""

from __future__ import annotations

import base64
import io
import mimetypes
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from omnilm.errors import OmniError
from omnilm.generation import GenerationSettings

DEFAULTS = GenerationSettings()


def _data_url(item: Any, default_mime: str) -> str:
    """A data URL for a path, bytes, PIL image or an existing data URL."""
    if isinstance(item, str) and item.startswith("data:"):
        return item
    if hasattr(item, "save"):  # PIL.Image
        buffer = io.BytesIO()
        item.save(buffer, format="PNG")
        data, mime = buffer.getvalue(), "image/png"
    elif isinstance(item, (bytes, bytearray)):
        data, mime = bytes(item), _sniff(bytes(item)) or default_mime
    else:
        path = Path(item)
        data, mime = path.read_bytes(), mimetypes.guess_type(path.name)[0] or default_mime
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


_SIGNATURES = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif", b"RIFF": "audio/wav",
               b"fLaC": "audio/flac", b"ID3": "audio/mpeg", b"OggS": "audio/ogg", b"\x1aE\xdf\xa3": "video/webm"}


def _sniff(data: bytes) -> str | None:
    """The MIME type of media bytes from their first bytes (dataset rows carry no file name)."""
    if data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    return next((mime for magic, mime in _SIGNATURES.items() if data.startswith(magic)), None)


def _audio_part(item: Any) -> dict:
    if isinstance(item, tuple):  # (samples, sample_rate) -> WAV
        import numpy as np
        import soundfile

        buffer = io.BytesIO()
        soundfile.write(buffer, np.asarray(item[0]), int(item[1]), format="WAV")
        data, fmt = buffer.getvalue(), "wav"
    elif isinstance(item, (bytes, bytearray)):
        data = bytes(item)
        fmt = {"audio/flac": "flac", "audio/mpeg": "mp3", "audio/ogg": "ogg"}.get(_sniff(data) or "", "wav")
    else:
        data, fmt = Path(item).read_bytes(), Path(item).suffix.lstrip(".").lower() or "wav"
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}}


def to_openai_messages(messages: list[dict]) -> list[dict]:
    """omnilm messages (content parts with paths/bytes) -> OpenAI chat messages."""
    converted = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            converted.append({"role": message["role"], "content": content})
            continue
        parts = []
        for part in content:
            kind = part["type"]
            if kind == "text":
                parts.append({"type": "text", "text": part["text"]})
            elif kind == "video" and isinstance(part["video"], list):  # frames sampled by the task: images
                parts += [{"type": "image_url", "image_url": {"url": _data_url(frame, "image/png")}}
                          for frame in part["video"]]
            elif kind in ("image", "video"):  # data URLs in image_url / video_url parts
                url = _data_url(part[kind], "image/png" if kind == "image" else "video/mp4")
                parts.append({"type": f"{kind}_url", f"{kind}_url": {"url": url}})
            elif kind == "audio":
                parts.append(_audio_part(part["audio"]))
            else:
                raise OmniError(f"cannot send a {kind!r} content part to an OpenAI-compatible endpoint")
        if message["role"] != "user" and all(p["type"] == "text" for p in parts):
            parts = "".join(p["text"] for p in parts)
        converted.append({"role": message["role"], "content": parts})
    return converted


class EndpointModel:
    """``chat_batch`` over an OpenAI-compatible server; requests of a batch run concurrently, in order."""

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None, *,
                 timeout: float = 300.0, max_retries: int = 2, max_concurrency: int = 8) -> None:
        try:
            from openai import OpenAI
        except ImportError as error:
            raise OmniError("evaluating an endpoint needs the openai client: pip install openai") from error
        url = base_url.rstrip("/")
        self.client = OpenAI(base_url=url if url.endswith("/v1") else url + "/v1", api_key=api_key or "none",
                             timeout=timeout, max_retries=max_retries)
        self.max_concurrency = max_concurrency
        self.model = model or self._first_model()
        self.name = f"{self.model}@{url}"

    def _first_model(self) -> str:
        try:
            models = [m.id for m in self.client.models.list()]
        except Exception as error:  # the client raises many kinds; say what to check
            raise OmniError(f"could not list models at {self.client.base_url} ({error}); is the server running? "
                            f"Pass the model name as MODEL to skip this step") from error
        if not models:
            raise OmniError(f"the server at {self.client.base_url} lists no models; pass the model name as MODEL")
        return models[0]

    def _one(self, messages: list[dict], settings: GenerationSettings) -> str:
        top_p = settings.top_p if settings.top_p != DEFAULTS.top_p else None
        kwargs = {"model": self.model, "messages": to_openai_messages(messages), "max_tokens": settings.max_new_tokens,
                  "temperature": settings.temperature, "top_p": top_p, "stop": list(settings.stop) or None,
                  "seed": settings.seed}  # None: not sent
        response = self.client.chat.completions.create(**{k: v for k, v in kwargs.items() if v is not None})
        return response.choices[0].message.content or ""

    def chat_batch(self, conversations: list[list[dict]], **gen: Any) -> list[str]:
        """Replies to several conversations (one request each, sent concurrently)."""
        settings = GenerationSettings.from_kwargs(**gen)
        sendable = {"max_new_tokens", "temperature", "top_p", "stop", "seed", "use_cache"}
        unsent = [k for k, v in settings.as_kwargs().items() if k not in sendable and v != getattr(DEFAULTS, k)]
        if unsent:
            raise OmniError(f"an OpenAI-compatible endpoint takes only max_new_tokens, temperature, top_p, stop and "
                            f"seed; drop {', '.join(unsent)}")
        with ThreadPoolExecutor(max_workers=max(1, min(self.max_concurrency, len(conversations)))) as pool:
            return list(pool.map(lambda messages: self._one(messages, settings), conversations))
