"""The API on the packaged Qwen2.5-0.5B-Instruct: its own tool format round trip and a pydantic parse."""

from __future__ import annotations

import json

import pytest

openai = pytest.importorskip("openai")
pydantic = pytest.importorskip("pydantic")

from omnilm.serve import ServeSettings, create_app
from omnilm.serve.background import BackgroundServer

pytestmark = pytest.mark.real

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
           "parameters": {"type": "object", "required": ["city"], "additionalProperties": False,
                          "properties": {"city": {"type": "string", "maxLength": 40}}}}}


@pytest.fixture(scope="module")
def client():
    import omnilm
    from omnilm.config import torch_dtype

    lm = omnilm.load("pkg:qwen2.5-0.5b-instruct", dtype=torch_dtype("auto"))  # bf16 where native, else float32
    with BackgroundServer(create_app(lm, ServeSettings(max_tokens=128))) as server:
        yield openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=600)


def test_tool_round_trip_through_qwens_template(client):
    messages = [{"role": "user", "content": "What is the weather in Paris right now?"}]
    first = client.chat.completions.create(model="m", messages=messages, tools=[WEATHER], tool_choice="required",
                                           max_tokens=64)
    (call,) = first.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)["city"]
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"sky": "sunny", "celsius": 21})}]
    final = client.chat.completions.create(model="m", messages=messages, tools=[WEATHER], max_tokens=48)
    assert "21" in final.choices[0].message.content or "sunny" in final.choices[0].message.content.lower()


def test_auto_tool_choice_lets_qwen_decide(client):
    reply = client.chat.completions.create(model="m", tools=[WEATHER], max_tokens=64, messages=[
        {"role": "user", "content": "Use the tool: what's the weather in Berlin?"}])
    calls = reply.choices[0].message.tool_calls or []
    assert reply.choices[0].finish_reason == ("tool_calls" if calls else "stop")
    assert all(c.function.name == "get_weather" for c in calls)


def test_parse_a_pydantic_model(client):
    class Capital(pydantic.BaseModel):
        country: str
        capital: str

    reply = client.chat.completions.parse(model="m", response_format=Capital, max_tokens=64, messages=[
        {"role": "user", "content": "What is the capital of France? Answer in JSON."}])
    parsed = reply.choices[0].message.parsed
    assert isinstance(parsed, Capital) and "paris" in parsed.capital.lower()
