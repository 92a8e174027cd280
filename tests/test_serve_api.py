"""The OpenAI-compatible server on loopback with a tiny model, driven by the official `openai` client."""

from __future__ import annotations

import base64
import io
import threading

import httpx
import numpy as np
import pytest
from PIL import Image

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from omnilm.serve import ServeSettings, create_app  # noqa: E402
from omnilm.serve.background import BackgroundServer  # noqa: E402

KEY = "test-key"
ALLOWED = ("127.0.0.1", "localhost", "10.0.0.1", "169.254.169.254", "public.example")


# Media ------------------------------------------------------------------------------------------
def image_url(width: int = 40, height: int = 30, color: str = "red") -> str:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def wav_b64(seconds: float = 0.5, rate: int = 16_000) -> str:
    import soundfile

    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    soundfile.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, format="WAV")
    return base64.b64encode(buf.getvalue()).decode()


def video_url(frames: int = 6) -> str:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=6)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(frames):
            array = np.full((32, 32, 3), 40 * i, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())
    return "data:video/mp4;base64," + base64.b64encode(buf.getvalue()).decode()


def user(*parts) -> list[dict]:
    return [{"role": "user", "content": [p if isinstance(p, dict) else {"type": "text", "text": p} for p in parts]}]


def img(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


# Fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lm(tiny_lm):
    return tiny_lm  # conftest: tiny_model(("image", "audio", "video")), shared by the session


@pytest.fixture(scope="module")
def server(lm):
    settings = ServeSettings(api_key=KEY, max_media_items=3, max_image_pixels=100_000, max_body_bytes=2 * 2**20,
                             allow_remote_media=True, allowed_hosts=ALLOWED, max_tokens=64)
    with BackgroundServer(create_app(lm, settings)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def ask(client, messages, **kwargs):
    kwargs.setdefault("max_tokens", 8)
    return client.chat.completions.create(model="tiny", messages=messages, **kwargs)


# Good requests ----------------------------------------------------------------------------------
def test_text_matches_the_library(client, lm):
    messages = user("What shape is it?")
    reply = ask(client, messages, max_tokens=8)
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == lm.chat(messages, max_new_tokens=8)
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 0 and 0 < reply.usage.completion_tokens <= 8
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_null_sampling_fields_are_greedy_and_stop_cuts_as_in_the_library(server, lm):
    messages = user("Go on.")
    body = {"messages": messages, "max_tokens": 12, "temperature": None, "top_p": None, "ignore_eos": True}
    full = post(server, body).json()["choices"][0]["message"]["content"]
    assert full == lm.chat(messages, max_new_tokens=12, ignore_eos=True)
    assert len(full) >= 3, full
    cut = post(server, {**body, "stop": full[1:3]}).json()["choices"][0]
    assert cut["message"]["content"] == lm.chat(messages, max_new_tokens=12, ignore_eos=True, stop=full[1:3])
    assert cut["finish_reason"] == "stop" and cut["message"]["content"] == full[: full.find(full[1:3])]


def test_image_audio_video_and_two_images(client, lm):
    one = ask(client, user(img(image_url()), "What colour?"))
    two = ask(client, user(img(image_url()), img(image_url(color="blue")), "Compare them."))
    per_image = lm.processor.layout.image_tokens
    assert two.usage.prompt_tokens - one.usage.prompt_tokens >= per_image  # both images reached the model
    audio = ask(client, user({"type": "input_audio", "input_audio": {"data": wav_b64(), "format": "wav"}}, "Say it."))
    video = ask(client, user({"type": "video_url", "video_url": {"url": video_url()}}, "What happens?"))
    for reply in (one, two, audio, video):
        assert isinstance(reply.choices[0].message.content, str) and reply.usage.completion_tokens > 0
    library = [{"role": "user", "content": [{"type": "image", "image": image_url()},
                                            {"type": "text", "text": "What colour?"}]}]
    assert one.choices[0].message.content == lm.chat(library, max_new_tokens=8)


def test_streaming_sends_chunks_usage_and_done(client, server):
    messages = user("Describe the image.")
    whole = ask(client, messages, max_tokens=12, extra_body={"ignore_eos": True})
    chunks = list(ask(client, messages, max_tokens=12, stream=True, stream_options={"include_usage": True},
                      extra_body={"ignore_eos": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    raw = httpx.post(server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                     json={"messages": messages, "max_tokens": 4, "stream": True})
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.rstrip().endswith("data: [DONE]")


def test_stop_sequence_cuts_the_answer(client):
    messages = user("Count: 0 1 2 3")
    full = ask(client, messages, max_tokens=16, extra_body={"ignore_eos": True}).choices[0].message.content
    visible = [i for i in range(2, len(full) - 2) if full[i:i + 2].strip() and "\ufffd" not in full[i:i + 2]]
    assert visible, f"the tiny model's answer {full!r} has no usable stop string"
    stop = full[visible[0]:visible[0] + 2]
    reply = ask(client, messages, max_tokens=16, stop=[stop], extra_body={"ignore_eos": True})
    assert reply.choices[0].message.content == full[: full.find(stop)]
    assert reply.choices[0].finish_reason == "stop"
    streamed = ask(client, messages, max_tokens=16, stop=stop, stream=True, extra_body={"ignore_eos": True})
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == full[: full.find(stop)]


def test_max_tokens_and_sampling_parameters(client):
    reply = ask(client, user("hello"), max_completion_tokens=5, temperature=0.8, top_p=0.9, seed=3,
                extra_body={"ignore_eos": True})
    assert reply.usage.completion_tokens == 5 and reply.choices[0].finish_reason == "length"
    again = ask(client, user("hello"), max_completion_tokens=5, temperature=0.8, top_p=0.9, seed=3,
                extra_body={"ignore_eos": True})
    assert again.choices[0].message.content == reply.choices[0].message.content  # same seed, same sample


def test_models_and_health(client, server, lm):
    models = client.models.list()
    assert [m.id for m in models.data] == [lm.name]
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["modalities"] == list(lm.modalities)


def test_concurrent_requests_are_batched(client, server):
    scheduler = server.app.state.scheduler
    results, errors = [], []

    def one(i: int) -> None:
        try:
            results.append(ask(client, user(f"question {i}"), max_tokens=16, extra_body={"ignore_eos": True}))
        except Exception as err:  # collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 8
    assert all(r.usage.completion_tokens == 16 for r in results)
    assert scheduler.largest_batch > 1  # at least two requests shared one generate call


# Bad requests -----------------------------------------------------------------------------------
def audio_part(data: str, fmt: str = "wav") -> dict:
    return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}


BAD_REQUESTS = {
    "broken image base64": (user(img("data:image/png;base64,@@not-base64@@"), "hi"), 400, "base64"),
    "not an image": (user(img("data:image/png;base64," + base64.b64encode(b"hello").decode()), "hi"), 400, "image"),
    "broken audio base64": (user(audio_part("%%%"), "hi"), 400, "base64"),
    "unsupported audio format": (user(audio_part(wav_b64(), "aac"), "hi"), 400, "wav, mp3, flac, ogg"),
    "oversized image": (user(img(image_url(400, 400)), "hi"), 400, "limit of 100000"),
    "too many media items": (user(*[img(image_url())] * 4, "hi"), 400, "at most 3"),
    "loopback URL": (user(img("http://127.0.0.1:9/x.png"), "hi"), 400, "loopback, private"),
    "localhost URL": (user(img("http://localhost:9/x.png"), "hi"), 400, "loopback, private"),
    "private URL": (user(img("http://10.0.0.1/x.png"), "hi"), 400, "loopback, private"),
    "link-local URL": (user(img("http://169.254.169.254/latest/meta-data"), "hi"), 400, "loopback, private"),
    "host not allowed": (user(img("https://elsewhere.example/x.png"), "hi"), 400, "allow-list"),
    "unknown part": (user({"type": "file", "file": {}}, "hi"), 400, "unknown content part"),
    "media in assistant turn": ([{"role": "assistant", "content": [img(image_url())]}], 400, "only user messages"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_media_gets_a_clear_4xx_and_the_server_carries_on(client, name):
    messages, status, phrase = BAD_REQUESTS[name]
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client, messages)
    assert caught.value.status_code == status
    error = caught.value.body
    assert error["type"] == "invalid_request_error" and phrase in error["message"], error
    assert ask(client, user("still there?"), max_tokens=2).choices[0].message.content is not None


def post(server, body: dict | bytes, key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if isinstance(body, bytes):
        return httpx.post(server.url + "/v1/chat/completions", content=body, timeout=60,
                          headers={**headers, "Content-Type": "application/json"})
    return httpx.post(server.url + "/v1/chat/completions", json=body, headers=headers, timeout=60)


@pytest.mark.parametrize(
    "body, key, status, phrase",
    [
        ({"messages": user("hi")}, None, 401, "missing API key"),
        ({"messages": user("hi")}, "wrong-key", 401, "incorrect API key"),
        ({"messages": user("hi"), "max_tokens": 1000}, KEY, 400, "at most 64"),
        ({"messages": user("hi"), "temperature": 5}, KEY, 400, "temperature"),
        ({"messages": []}, KEY, 400, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, KEY, 400, "role"),
        ({"messages": user("hi"), "stop": ["a", "b", "c", "d", "e"]}, KEY, 400, "stop"),
        (b"{not json", KEY, 400, "invalid request"),
        (b'{"messages": [{"role": "user", "content": "' + b"x" * (3 * 2**20) + b'"}]}', KEY, 413, "limit"),
    ],
    ids=["no key", "wrong key", "too many tokens", "bad temperature", "no messages", "bad role", "five stops",
         "broken json", "body too large"],
)
def test_bad_requests_get_openai_error_json(server, client, body, key, status, phrase):
    response = post(server, body, key)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and phrase in error["message"], error
    assert ask(client, user("and now?"), max_tokens=2).choices[0].message.content is not None


def test_missing_key_through_the_openai_client(server):
    anonymous = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.models.list()


def test_remote_urls_refused_when_not_allowed(lm):
    with BackgroundServer(create_app(lm, ServeSettings())) as server:
        local = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="remote image URLs are disabled"):
            ask(local, user(img("https://public.example/cat.png"), "hi"))
        assert ask(local, user("hi"), max_tokens=2).choices[0].message.content is not None


# Time limits and shutdown -----------------------------------------------------------------------
def test_request_timeout_is_408(lm):
    with BackgroundServer(create_app(lm, ServeSettings(request_timeout=0.3, max_tokens=4000))) as server:
        local = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            ask(local, user("go on"), max_tokens=4000, extra_body={"ignore_eos": True})
        assert caught.value.status_code == 408 and "timeout" in caught.value.body["message"]
        assert ask(local, user("hi"), max_tokens=2).choices[0].message.content is not None


def test_graceful_shutdown_finishes_the_stream_in_flight(lm):
    server = BackgroundServer(create_app(lm, ServeSettings())).start()
    local = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    stream = ask(local, user("a long answer"), max_tokens=300, stream=True, stream_options={"include_usage": True},
                 extra_body={"ignore_eos": True})
    chunks = [next(stream)]
    stopper = threading.Thread(target=server.stop)
    stopper.start()  # like SIGTERM: no new connections, running requests finish
    chunks += list(stream)
    stopper.join(60)
    assert not server.thread.is_alive()
    assert chunks[-1].usage.completion_tokens == 300
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/health", timeout=5)
