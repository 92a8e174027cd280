"""The FastAPI app: OpenAI-compatible chat completions, models, health and the web page."""

from __future__ import annotations

import asyncio
import contextlib
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
from omnilm.generation import GenerationRequest, GenerationSettings, PlainPrompt
from omnilm.media_cache import MediaCache
from omnilm.serve import tools as toolkit
from omnilm.serve.audio import add_voice
from omnilm.serve.auth import BodyLimitMiddleware, check_bearer
from omnilm.serve.batching import BatchScheduler, QueueFullError
from omnilm.serve.errors import APIError
from omnilm.serve.media import MediaConverter
from omnilm.serve.metrics import ServerMetrics
from omnilm.serve.options import generation_settings, response_grammar
from omnilm.serve.replies import ChatShape, Choices, CompletionShape, reply, stream
from omnilm.serve.schemas import ChatCompletionRequest, CompletionRequest
from omnilm.serve.settings import ServeSettings
from omnilm.serve.voice import VoiceSettings
from omnilm.serve.web import add_web_page

logger = logging.getLogger(__name__)


def create_app(lm, settings: ServeSettings | None = None, voice: VoiceSettings | None = None) -> FastAPI:
    """An app serving `lm`; its batch scheduler starts now and drains on the app's shutdown. `voice`: the
    speech recognizer and engine behind /v1/audio/* and spoken replies (default: the model's Whisper, espeak-ng)."""
    settings = settings or ServeSettings()
    model_id = settings.model_id or lm.name
    cache = None
    if settings.media_cache_mb > 0 and hasattr(getattr(lm, "model", None), "media_cache"):
        cache = lm.model.media_cache = MediaCache(max_bytes=int(settings.media_cache_mb * 2**20))
    scheduler = BatchScheduler(lm, max_batch_size=settings.max_batch_size, batch_wait_ms=settings.batch_wait_ms,
                               max_queue=settings.max_queue, mode=settings.batching)
    metrics = ServerMetrics(queue_depth=lambda: scheduler.queue_depth, media_cache=cache)
    scheduler.on_step = metrics.batch_size.observe
    converter = MediaConverter(settings, tuple(lm.modalities), lm.processor.layout.video_frames)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        logger.info("shutting down: finishing queued and running requests")
        await asyncio.to_thread(scheduler.close)

    app, auth = api_app(settings, title="omnilm", model_id=model_id, modalities=tuple(lm.modalities),
                        closing=lambda: scheduler.closing, lifespan=lifespan)
    app.state.scheduler = scheduler  # for statistics (tests, benchmarks)
    metrics.install(app, auth)

    @app.get("/v1/models/{name:path}", dependencies=auth)
    async def model(name: str) -> dict:
        if name != model_id:
            raise APIError(404, f"model {name!r} is not served here; this server serves {model_id!r}")
        return app.state.model_card

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(body: ChatCompletionRequest):
        tools = toolkit.check_tools(body, lm.processor.tokenizer.chat_template)
        grammar = toolkit.forced_grammar(body, lm.processor.tokenizer) or response_grammar(body.response_format)
        gen = generation_settings(body, settings, max_tokens=body.max_completion_tokens or body.max_tokens,
                                  logprobs=body.logprobs, top_logprobs=body.top_logprobs or 0, grammar=grammar,
                                  vocab_size=len(lm.processor.tokenizer))
        messages = toolkit.template_messages(await run_in_threadpool(converter.messages, body.messages), body)
        try:
            conversation = normalize_conversation(messages, lm.processor.layout.placeholders)
        except OmniError as err:
            raise APIError(400, str(err), param="messages") from None
        conversation.tools = tools
        shape = ChatShape(tools=tools is not None, parallel=body.parallel_tool_calls, logprobs=body.logprobs)
        return await answer(conversation, gen, body, shape, "chatcmpl")

    @app.post("/v1/completions", dependencies=auth)
    async def completions(body: CompletionRequest):
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise APIError(400, "prompt: send one prompt per request (a list of one string is fine)", param="prompt")
        if body.best_of not in (None, body.n):
            raise APIError(400, "best_of: omnilm does not re-rank candidates; drop best_of or set it to n",
                           param="best_of")
        gen = generation_settings(body, settings, max_tokens=body.max_tokens, logprobs=body.logprobs is not None,
                                  top_logprobs=body.logprobs or 0, grammar=None,
                                  vocab_size=len(lm.processor.tokenizer))
        shape = CompletionShape(logprobs=body.logprobs is not None)
        return await answer(PlainPrompt(prompts[0]), gen, body, shape, "cmpl")

    async def answer(messages, gen: GenerationSettings, body, shape, prefix: str):
        """Submit n choices, wait for the first event (errors while encoding still get a 4xx), then reply."""
        requests = [GenerationRequest(messages, gen, choice=i) for i in range(body.n)]
        choices = Choices(requests, asyncio.get_running_loop().time() + settings.request_timeout, metrics)
        try:
            for request in requests:
                scheduler.submit(request)
        except QueueFullError as err:
            choices.cancel()
            raise APIError(429 if not scheduler.closing else 503, str(err)) from None
        meta = {"id": f"{prefix}-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": model_id}
        first = await choices.next_or_raise()
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(stream(choices, shape, meta, first, include_usage),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await reply(choices, shape, meta, first)

    add_voice(app, lm, settings, auth, voice)
    add_web_page(app, lm, model_id, auth_required=settings.api_key is not None)
    return app


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
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'][1:]) or 'body'}: {_message(e)}" for e in err.errors())
        first = err.errors()[0]["loc"][1:2] if err.errors() else ()
        return APIError(400, f"invalid request: {problems}", param=str(first[0]) if first else None).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, err: StarletteHTTPException) -> JSONResponse:
        return APIError(err.status_code, str(err.detail)).response()


def _message(error: dict) -> str:
    if error["type"] == "extra_forbidden":
        return "omnilm does not support this field (it is refused rather than ignored); remove it"
    return error["msg"]
