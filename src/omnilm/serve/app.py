"""The FastAPI app: OpenAI-compatible chat completions, models, health and the web page."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid

from fastapi import Depends, FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from omnilm.chat import normalize_conversation
from omnilm.errors import OmniError
from omnilm.generation import GenerationRequest, GenerationSettings
from omnilm.serve.audio import add_voice
from omnilm.serve.auth import BodyLimitMiddleware, check_bearer
from omnilm.serve.batching import BatchScheduler, QueueFullError
from omnilm.serve.errors import APIError
from omnilm.serve.media import MediaConverter
from omnilm.serve.schemas import ChatCompletionRequest
from omnilm.serve.settings import ServeSettings
from omnilm.serve.voice import VoiceSettings
from omnilm.serve.web import add_web_page

logger = logging.getLogger(__name__)


def create_app(lm, settings: ServeSettings | None = None, voice: VoiceSettings | None = None) -> FastAPI:
    """An app serving `lm`; its batch scheduler starts now and drains on the app's shutdown. `voice`: the
    speech recognizer and engine behind /v1/audio/* and spoken replies (default: the model's Whisper, espeak-ng)."""
    settings = settings or ServeSettings()
    model_id = settings.model_id or lm.name
    scheduler = BatchScheduler(lm, max_batch_size=settings.max_batch_size, batch_wait_ms=settings.batch_wait_ms,
                               max_queue=settings.max_queue)
    converter = MediaConverter(settings, tuple(lm.modalities), lm.processor.layout.video_frames)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        logger.info("shutting down: finishing queued and running requests")
        await asyncio.to_thread(scheduler.close)

    app, auth = api_app(settings, title="omnilm", model_id=model_id, modalities=tuple(lm.modalities),
                        closing=lambda: scheduler.closing, lifespan=lifespan)
    app.state.scheduler = scheduler  # for statistics (tests, benchmarks)

    @app.get("/v1/models/{name:path}", dependencies=auth)
    async def model(name: str) -> dict:
        if name != model_id:
            raise APIError(404, f"model {name!r} is not served here; this server serves {model_id!r}")
        return app.state.model_card

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(body: ChatCompletionRequest):
        max_tokens = body.max_completion_tokens or body.max_tokens or settings.default_max_tokens
        if max_tokens > settings.max_tokens:
            raise APIError(400, f"max_tokens is {max_tokens}; this server allows at most {settings.max_tokens}",
                           param="max_tokens")
        messages = await run_in_threadpool(converter.messages, body.messages)
        try:
            normalize_conversation(messages, lm.processor.layout.placeholders)
        except OmniError as err:
            raise APIError(400, str(err), param="messages") from None
        loop, events = asyncio.get_running_loop(), asyncio.Queue()

        def sink(event: tuple) -> None:
            with contextlib.suppress(RuntimeError):  # the event loop is gone (server stopped)
                loop.call_soon_threadsafe(events.put_nowait, event)

        gen = GenerationSettings.from_kwargs(max_new_tokens=max_tokens, temperature=body.temperature,
                                             top_p=body.top_p, stop=body.stop, seed=body.seed,
                                             ignore_eos=body.ignore_eos)
        request = GenerationRequest(messages, gen, sink)
        try:
            scheduler.submit(request)
        except QueueFullError as err:
            raise APIError(429 if not scheduler.closing else 503, str(err)) from None
        stream = _Events(events, request, loop.time() + settings.request_timeout)
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": model_id}
        first = await stream.next_or_raise()  # errors found while encoding still get a 4xx status
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_sse(first, stream, meta, include_usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        pieces, event = [], first
        while event[0] == "delta":
            pieces.append(event[1])
            event = await stream.next_or_raise()
        return {**meta, "object": "chat.completion", "system_fingerprint": None, "usage": event[2],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(pieces)},
                             "logprobs": None, "finish_reason": event[1]}]}

    add_voice(app, lm, settings, auth, voice)
    add_web_page(app, lm, model_id, auth_required=settings.api_key is not None)
    return app


class _Events:
    """The events of one request, with its deadline; cancels the request when abandoned or late."""

    def __init__(self, queue: asyncio.Queue, request: GenerationRequest, deadline: float) -> None:
        self.queue, self.request, self.deadline = queue, request, deadline

    async def next_or_raise(self) -> tuple:
        try:
            async with asyncio.timeout_at(self.deadline):
                event = await self.queue.get()
        except TimeoutError:
            self.request.cancelled.set()
            raise APIError(408, "the request took longer than this server's timeout; ask for fewer tokens or "
                                "retry when it is less busy") from None
        except asyncio.CancelledError:  # the client went away
            self.request.cancelled.set()
            raise
        if event[0] == "error":
            err = event[1]
            if isinstance(err, OmniError):
                raise APIError(400, str(err), param="messages")
            raise APIError(500, f"generation failed: {type(err).__name__}: {err}")
        return event


async def _sse(first: tuple, stream: _Events, meta: dict, include_usage: bool):
    """Server-sent events: a role chunk, content chunks, a finish chunk, [usage chunk], `[DONE]`."""

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        body = {**meta, "object": "chat.completion.chunk", "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(body)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        event = first
        while event[0] == "delta":
            yield chunk({"content": event[1]})
            event = await stream.next_or_raise()
        yield chunk({}, event[1])
        if include_usage:
            usage = {**meta, "object": "chat.completion.chunk", "choices": [], "usage": event[2]}
            yield f"data: {json.dumps(usage)}\n\n"
    except APIError as err:  # too late for a status code: report it in the stream
        yield f"data: {json.dumps(err.body())}\n\n"
    finally:
        stream.request.cancelled.set()  # no-op when finished; stops generation if the client left
    yield "data: [DONE]\n\n"


def api_app(settings: ServeSettings, *, title: str, model_id: str, modalities: tuple[str, ...],
            closing=lambda: False, lifespan=None) -> tuple[FastAPI, list]:
    """The scaffolding every omnilm server shares: the body-size limit, OpenAI-style errors, GET /health
    (503 while `closing()`) and GET /v1/models behind the bearer key. Returns the app and the dependencies
    that check the key, for its other routes."""
    app = FastAPI(title=title, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.model_card = {"id": model_id, "object": "model", "created": int(time.time()), "owned_by": "omnilm",
                            "modalities": ["text", *modalities]}
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    _add_error_handlers(app)

    def authorized(authorization: str | None = Header(None)) -> None:
        check_bearer(authorization, settings.api_key)

    auth = [Depends(authorized)]

    @app.get("/health")
    async def health() -> JSONResponse:
        down = closing()
        return JSONResponse({"status": "shutting_down" if down else "ok", "model": model_id,
                             "modalities": list(modalities)}, status_code=503 if down else 200)

    @app.get("/v1/models", dependencies=auth)
    async def models() -> dict:
        return {"object": "list", "data": [app.state.model_card]}

    return app, auth


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_request: Request, err: APIError) -> JSONResponse:
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'][1:]) or 'body'}: {e['msg']}" for e in err.errors())
        first = err.errors()[0]["loc"][1:2] if err.errors() else ()
        return APIError(400, f"invalid request: {problems}", param=str(first[0]) if first else None).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, err: StarletteHTTPException) -> JSONResponse:
        return APIError(err.status_code, str(err.detail)).response()
