"""Chat completions that answer aloud: `modalities: ["text", "audio"]` with `audio: {voice, format}`.

An ASGI middleware around POST /v1/chat/completions, so the chat route itself stays text-only: it checks the
audio options, passes the request on without them (and without `modalities`), then speaks the route's answer.
A whole reply gets `message.audio` {id, data (base64), transcript, expires_at} with `content` null, as OpenAI
answers. A stream gets OpenAI's audio deltas: the text as `delta.audio.transcript` pieces as they come and, once
each sentence is complete, its speech as a `delta.audio.data` chunk (a whole file of the asked format per
sentence; `pcm16` chunks concatenate), then `delta.audio.expires_at` before the finish chunk.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid

from omnilm.errors import OmniError
from omnilm.serve.auth import check_bearer
from omnilm.serve.errors import APIError
from omnilm.serve.voice import Voice
from omnilm.speech.encode import audio_format
from omnilm.speech.sentences import SentenceSplitter

logger = logging.getLogger(__name__)

CHAT_PATH = "/v1/chat/completions"
AUDIO_LIFETIME_SECONDS = 3600  # `expires_at`: nothing is stored, the stamp keeps OpenAI's shape


class SpokenChatMiddleware:
    """ASGI middleware: spoken replies for chat completions that ask for audio (others pass untouched)."""

    def __init__(self, app, *, voice: Voice, api_key: str | None, max_body_bytes: int) -> None:
        self.app, self.voice, self.api_key, self.max_body_bytes = app, voice, api_key, max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != CHAT_PATH:
            await self.app(scope, receive, send)
            return
        messages, body, complete = [], b"", True
        while True:  # read the body (up to the server's limit; beyond it the inner limit answers 413)
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            if not message.get("more_body") or message["type"] != "http.request":
                break
            if len(body) > self.max_body_bytes:
                complete = False
                break
        replay = _replay(messages, receive)
        options = _audio_options(body) if complete else None
        if options is None:
            await self.app(scope, replay, send)
            return
        try:
            check_bearer(_header(scope, b"authorization"), self.api_key)
            voice, fmt = self._check(options)
        except APIError as err:
            await _send_response(send, err.response())
            return
        speaker = _Speaker(self.voice, voice, fmt)
        text_only = json.dumps({k: v for k, v in options.items() if k not in ("audio", "modalities")})
        body = text_only.encode("utf-8")  # the chat route answers in text; the speech is added here
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive),
                       _Rewriter(send, speaker).send)

    def _check(self, options: dict) -> tuple[str, str]:
        if self.voice.engine is None:
            raise APIError(400, "this server has no speech engine, so it cannot answer with audio; drop 'audio' "
                                "from modalities, or start it with espeak-ng installed", param="modalities")
        audio = options.get("audio") or {}
        if not isinstance(audio, dict):
            raise APIError(400, "audio must be an object such as {\"voice\": \"alloy\", \"format\": \"wav\"}",
                           param="audio")
        voice = audio.get("voice", "alloy")
        voice = voice.get("id", "") if isinstance(voice, dict) else str(voice)
        try:
            self.voice.engine.check_voice(voice)
        except OmniError as err:
            raise APIError(400, str(err), param="audio.voice") from None
        try:
            fmt = audio_format(str(audio.get("format", "wav")))
        except OmniError as err:
            raise APIError(400, str(err), param="audio.format") from None
        return voice, fmt


class _Speaker:
    """Speech of one reply; each sentence is synthesised in a worker thread while the text keeps coming."""

    def __init__(self, voice: Voice, name: str, fmt: str) -> None:
        self.voice, self.name, self.fmt = voice, name, fmt
        self.id = f"audio_{uuid.uuid4().hex[:24]}"
        self.expires_at = int(time.time()) + AUDIO_LIFETIME_SECONDS

    async def speak(self, text: str) -> str:
        audio = await asyncio.to_thread(self.voice.speak, text, voice=self.name, fmt=self.fmt)
        return base64.b64encode(audio).decode("ascii")

    def message_audio(self, data: str, transcript: str) -> dict:
        return {"id": self.id, "data": data, "expires_at": self.expires_at, "transcript": transcript}


class _Rewriter:
    """Wraps the route's `send`: a JSON reply gains `message.audio`; a stream gains audio deltas."""

    def __init__(self, send, speaker: _Speaker) -> None:
        self.downstream, self.speaker = send, speaker
        self.start: dict | None = None
        self.mode = "pass"  # pass (an error answer) | json | sse
        self.buffer = b""
        self.lock = asyncio.Lock()
        self.choices: dict[int, _SpokenChoice] = {}

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            headers = dict(message.get("headers", []))
            kind = headers.get(b"content-type", b"").split(b";")[0]
            self.mode = "pass" if message["status"] != 200 else {b"application/json": "json",
                                                                 b"text/event-stream": "sse"}.get(kind, "pass")
            if self.mode == "json":
                self.start = message  # sent once the body's new length is known
                return
            await self.downstream(message)
            return
        if message["type"] != "http.response.body" or self.mode == "pass":
            await self.downstream(message)
            return
        self.buffer += message.get("body", b"")
        more = message.get("more_body", False)
        if self.mode == "json":
            if not more:
                await self._send_json()
            return
        try:
            while b"\n\n" in self.buffer:
                event, self.buffer = self.buffer.split(b"\n\n", 1)
                await self._sse_event(event)
        finally:
            if not more:
                for choice in self.choices.values():
                    choice.cancel()
        if not more:
            await self._emit(self.buffer, more=False)

    async def _send_json(self) -> None:
        reply = json.loads(self.buffer)
        try:
            for choice in reply.get("choices", []):
                message = choice.get("message") or {}
                transcript = message.get("content") or ""
                data = await self.speaker.speak(transcript) if transcript.strip() else ""
                message["content"], message["audio"] = None, self.speaker.message_audio(data, transcript)
        except Exception as err:  # the engine failed: say so in OpenAI's shape rather than drop the connection
            logger.exception("speech synthesis failed")
            await _send_response(self.downstream, APIError(500, f"speech synthesis failed: {err}").response())
            return
        body = json.dumps(reply).encode("utf-8")
        headers = [(k, v) for k, v in self.start.get("headers", []) if k != b"content-length"]
        await self.downstream({**self.start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await self.downstream({"type": "http.response.body", "body": body})

    async def _sse_event(self, raw: bytes) -> None:
        line = raw.strip()
        if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
            await self._emit(raw + b"\n\n")
            return
        event = json.loads(line[5:])
        finishing = []
        for choice in event.get("choices") or []:
            index = choice.get("index", 0)
            if index not in self.choices:
                self.choices[index] = _SpokenChoice(self, event, index)
            spoken = self.choices[index]
            delta = choice.get("delta") or {}
            text = delta.pop("content", None)
            if "role" in delta:
                delta["content"] = None
            if text:
                delta["audio"] = {"id": self.speaker.id, "transcript": text}
                spoken.feed(text)
            if choice.get("finish_reason") is not None:
                finishing.append(spoken)
        for spoken in finishing:  # the finish chunk waits for the reply's speech
            await spoken.finish()
        await self._emit(b"data: " + json.dumps(event).encode("utf-8") + b"\n\n")

    async def _emit(self, data: bytes, *, more: bool = True) -> None:
        async with self.lock:
            await self.downstream({"type": "http.response.body", "body": data, "more_body": more})


class _SpokenChoice:
    """One streamed choice: its sentences, spoken in order by a background task as they complete."""

    def __init__(self, rewriter: _Rewriter, event: dict, index: int) -> None:
        self.rewriter, self.index = rewriter, index
        self.meta = {k: v for k, v in event.items() if k not in ("choices", "usage")}
        self.splitter = SentenceSplitter()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task = asyncio.create_task(self._deliver())

    def feed(self, text: str) -> None:
        for sentence in self.splitter.feed(text):
            self.queue.put_nowait(asyncio.ensure_future(self.rewriter.speaker.speak(sentence)))

    async def finish(self) -> None:
        for sentence in self.splitter.flush():
            self.queue.put_nowait(asyncio.ensure_future(self.rewriter.speaker.speak(sentence)))
        self.queue.put_nowait(None)
        await self.task
        await self._chunk({"id": self.rewriter.speaker.id, "expires_at": self.rewriter.speaker.expires_at})

    def cancel(self) -> None:
        self.task.cancel()
        while not self.queue.empty():
            pending = self.queue.get_nowait()
            if pending is not None:
                pending.cancel()

    async def _deliver(self) -> None:
        while (speech := await self.queue.get()) is not None:
            try:
                data = await speech
            except Exception:  # a sentence the engine could not speak: the text is still sent
                logger.exception("speech synthesis failed for one sentence")
                continue
            await self._chunk({"id": self.rewriter.speaker.id, "data": data})

    async def _chunk(self, audio: dict) -> None:
        body = {**self.meta, "choices": [{"index": self.index, "delta": {"audio": audio}, "logprobs": None,
                                          "finish_reason": None}]}
        await self.rewriter._emit(b"data: " + json.dumps(body).encode("utf-8") + b"\n\n")


def _audio_options(body: bytes) -> dict | None:
    """The request's JSON when it asks for audio output (`"audio"` in modalities), else None."""
    try:
        request = json.loads(body)
    except ValueError:
        return None
    if not isinstance(request, dict) or "audio" not in (request.get("modalities") or []):
        return None
    return request


def _replay(messages: list[dict], receive):
    """A `receive` that gives the messages already read, then reads on."""
    pending = list(messages)

    async def replay() -> dict:
        return pending.pop(0) if pending else await receive()

    return replay


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _send_response(send, response) -> None:
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": [(k, v) for k, v in response.raw_headers]})
    await send({"type": "http.response.body", "body": response.body})


def add_spoken_chat(app, voice: Voice, *, api_key: str | None, max_body_bytes: int) -> None:
    """Spoken replies for `app`'s chat completions (before the app starts serving)."""
    app.add_middleware(SpokenChatMiddleware, voice=voice, api_key=api_key, max_body_bytes=max_body_bytes)
