"""OpenAI's audio API on an omnilm server: POST /v1/audio/transcriptions, /v1/audio/translations,
/v1/audio/speech and GET /v1/audio/voices; spoken chat replies come from `serve.spoken_chat`."""

from __future__ import annotations

import importlib.util
import logging
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict

from omnilm.errors import OmniError
from omnilm.media import load_audio
from omnilm.serve.errors import APIError
from omnilm.serve.spoken_chat import add_spoken_chat
from omnilm.serve.voice import Voice, VoiceSettings
from omnilm.speech.captions import MEDIA_TYPES, check_response_format, render
from omnilm.speech.encode import FORMATS, audio_format
from omnilm.speech.tts import check_speed

logger = logging.getLogger(__name__)


class SpeechRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None  # tts-1, gpt-4o-mini-tts…: one engine is served; any name is accepted
    input: str
    voice: str | dict[str, Any] = "alloy"  # a name, or {"id": name} as newer clients send
    response_format: str = "mp3"
    speed: float = 1.0
    instructions: str | None = None  # gpt-4o-mini-tts's style prompt: no engine here follows one, so it is refused
    stream_format: str | None = None  # "audio" (the default) or "sse"; only "audio" is offered


def add_voice(app: FastAPI, lm, settings, auth: list, voice_settings: VoiceSettings | None = None) -> Voice:
    """The server's voice (`app.state.voice`): the /v1/audio/* routes and spoken chat replies. `settings` are
    the server's ServeSettings (its key and body limit); `auth` the dependencies that check the key."""
    voice = Voice.for_model(lm, voice_settings)
    app.state.voice = voice
    add_audio_routes(app, voice, auth)
    add_spoken_chat(app, voice, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes)
    return voice


def add_audio_routes(app: FastAPI, voice: Voice, auth: list) -> None:
    """Mount the /v1/audio/* routes on `app`, behind the same bearer key as its other routes."""
    add_speech_routes(app, voice, auth)
    if importlib.util.find_spec("python_multipart") is None:  # FastAPI reads uploads with it
        logger.warning("python-multipart is not installed: /v1/audio/transcriptions and translations are off "
                       "(pip install python-multipart)")
        return

    @app.post("/v1/audio/transcriptions", dependencies=auth)
    async def transcriptions(file: Annotated[UploadFile, File()], model: Annotated[str, Form()] = "whisper-1",
                             language: Annotated[str | None, Form()] = None,
                             prompt: Annotated[str | None, Form()] = None,
                             response_format: Annotated[str, Form()] = "json",
                             temperature: Annotated[float, Form()] = 0.0,
                             granularities: Annotated[list[str] | None, Form(alias="timestamp_granularities[]")] = None):
        return await _recognize(voice, file, language=language, prompt=prompt, response_format=response_format,
                                temperature=temperature, granularities=granularities, task="transcribe")

    @app.post("/v1/audio/translations", dependencies=auth)
    async def translations(file: Annotated[UploadFile, File()], model: Annotated[str, Form()] = "whisper-1",
                           prompt: Annotated[str | None, Form()] = None,
                           response_format: Annotated[str, Form()] = "json",
                           temperature: Annotated[float, Form()] = 0.0):
        return await _recognize(voice, file, language=None, prompt=prompt, response_format=response_format,
                                temperature=temperature, granularities=None, task="translate")


def add_speech_routes(app: FastAPI, voice: Voice, auth: list) -> None:
    @app.post("/v1/audio/speech", dependencies=auth)
    async def speech(body: SpeechRequest) -> Response:
        engine = _engine(voice)
        name = body.voice if isinstance(body.voice, str) else str(body.voice.get("id", ""))
        fmt = _checked(lambda: audio_format(body.response_format), "response_format")
        _checked(lambda: check_speed(body.speed), "speed")
        _checked(lambda: engine.check_voice(name), "voice")
        if body.instructions:
            raise APIError(400, f"{engine.name} cannot follow instructions; drop them (the voice sets the style)",
                           param="instructions")
        if body.stream_format not in (None, "audio"):
            raise APIError(400, "stream_format 'sse' is not offered; the audio file streams as it is",
                           param="stream_format")
        text = body.input.strip()
        if not text:
            raise APIError(400, "input is empty; give the text to speak", param="input")
        limit = voice.settings.max_speech_chars
        if len(body.input) > limit:
            raise APIError(400, f"input has {len(body.input)} characters; this server speaks at most {limit} per "
                                "request: split the text", param="input")
        audio = await run_in_threadpool(_checked, lambda: voice.speak(text, voice=name, fmt=fmt, speed=body.speed),
                                        "input")
        return Response(audio, media_type=FORMATS[fmt].media_type)

    @app.get("/v1/audio/voices", dependencies=auth)
    async def voices() -> dict:
        engine = _engine(voice)
        return {"object": "list", "engine": engine.name, "formats": list(FORMATS),
                "data": [v.card(engine.name) for v in engine.voices()]}


async def _recognize(voice: Voice, upload: UploadFile, *, language, prompt, response_format, temperature,
                     granularities, task):
    if voice.recognizer is None:
        raise APIError(404, "this server has no speech recognizer; start it with --asr pkg:whisper-base (or serve "
                            "a model whose audio.mode is transcribe)")
    fmt = _checked(lambda: check_response_format(response_format), "response_format")
    if not 0.0 <= temperature <= 1.0:
        raise APIError(400, f"temperature is {temperature}; it must lie between 0 and 1", param="temperature")
    granularities = _granularities(granularities, fmt, voice.recognizer)
    if task == "translate" and not voice.recognizer.can_translate:
        raise APIError(400, f"{voice.recognizer.name} is an English-only Whisper and cannot translate; use "
                            "/v1/audio/transcriptions", param="model")
    language = _checked(lambda: voice.recognizer.check_language(language), "language")
    limit = voice.settings.max_upload_bytes
    data = await upload.read(limit + 1)
    if not data:
        raise APIError(400, f"the uploaded file {upload.filename!r} is empty", param="file")
    if len(data) > limit:
        raise APIError(413, f"the uploaded file is over this server's limit of {limit // 2**20} MiB; cut it into "
                            "parts", param="file")
    seconds = voice.settings.max_transcribe_seconds
    samples = _checked(lambda: load_audio(data, max_seconds=seconds), "file")
    transcript = await run_in_threadpool(
        _checked, lambda: voice.transcribe(samples, language=language, prompt=prompt, temperature=temperature,
                                           task=task, word_timestamps="word" in granularities), "file")
    body = render(transcript, fmt)
    if fmt == "verbose_json":  # as OpenAI: `words` when asked for, `segments` unless only words were
        if "word" in granularities:
            body["words"] = [word.as_dict() for word in transcript.words]
        if "segment" not in granularities:
            del body["segments"]
    if isinstance(body, dict):
        return JSONResponse(body)
    return PlainTextResponse(body, media_type=MEDIA_TYPES[fmt])


def _granularities(asked: list[str] | None, fmt: str, recognizer) -> set[str]:
    """The timestamp granularities asked for (OpenAI's default: segment), checked."""
    granularities = set(asked or ["segment"])
    if unknown := granularities - {"segment", "word"}:
        raise APIError(400, f"unknown timestamp granularity {sorted(unknown)[0]!r}; choose segment, word or both",
                       param="timestamp_granularities")
    if "word" in granularities and fmt != "verbose_json":
        raise APIError(400, "word timestamps come only with response_format verbose_json",
                       param="timestamp_granularities")
    if "word" in granularities and not recognizer.can_time_words:
        raise APIError(400, f"{recognizer.name} has no alignment heads (generation_config.alignment_heads), so it "
                            "cannot time words; ask for timestamp_granularities=['segment']",
                       param="timestamp_granularities")
    return granularities


def _engine(voice: Voice):
    if voice.engine is None:
        raise APIError(404, "this server has no speech engine; install espeak-ng (`make system-deps`) or start it "
                            "with --tts piper --tts-voice-file VOICE.onnx")
    return voice.engine


def _checked(call, param: str):
    """`call()`, an OmniError (MediaError included) becoming a 400 naming `param`."""
    try:
        return call()
    except OmniError as err:
        raise APIError(400, str(err), param=param) from None
