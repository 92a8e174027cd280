"""The API as clients use it, through the official `openai` client: refusals, logprobs, penalties, logit_bias,
n choices, /v1/completions, structured output (json_schema, json_object, pydantic parse) and tools."""

from __future__ import annotations

import json

import httpx
import pytest
import torch

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
jsonschema = pytest.importorskip("jsonschema")
pydantic = pytest.importorskip("pydantic")

from omnilm.generation import PlainPrompt
from omnilm.serve import ServeSettings, create_app
from omnilm.serve.background import BackgroundServer
from tests.test_serve_api import image_url, img, user

GREEDY = {"temperature": 0, "extra_body": {"ignore_eos": True}}
TOOLS_TEMPLATE = (  # a compact Hermes/Qwen-style template: tools in the system turn, calls as <tool_call> JSON
    "{%- if tools %}<|im_start|>system\nYou may call these functions: <tools>{% for t in tools %}{{ t | tojson }}"
    "{% endfor %}</tools> Answer <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call> to call one.<|im_end|>\n"
    "{% endif %}{%- for m in messages %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}{% for c in m.tool_calls %}"
    "<tool_call>\n{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}\n</tool_call>"
    "{% endfor %}{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "today's weather in a city",
           "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "days"],
                          "properties": {"city": {"type": "string", "maxLength": 12},
                                         "days": {"type": "integer", "minimum": 1, "maximum": 7}}}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module")
def lm():
    from omnilm.testing import tiny_model

    model = tiny_model(("image",))
    model.processor.tokenizer.chat_template = TOOLS_TEMPLATE
    return model


@pytest.fixture(scope="module")
def server(lm):
    with BackgroundServer(create_app(lm, ServeSettings(max_tokens=96))) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60)


def refused(client, param: str, **kwargs) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m", **{"messages": user("hi"), "max_tokens": 4, **kwargs})
    assert caught.value.body["param"] == param, caught.value.body
    return caught.value


# Nothing silently ignored -------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [("store", True), ("prediction", {"type": "content", "content": "x"}),
                                          ("made_up_field", 1)])
def test_an_unsupported_field_is_a_400_naming_it(client, field, value):
    err = refused(client, field, extra_body={field: value})
    assert field in err.body["message"] and "does not support" in err.body["message"]
    assert client.chat.completions.create(model="m", messages=user("hi"), max_tokens=2).choices  # still serving


def test_text_only_modalities_are_taken_and_an_output_modality_omnilm_lacks_is_refused(client):
    assert client.chat.completions.create(model="m", messages=user("hi"), max_tokens=2, modalities=["text"]).choices
    refused(client, "modalities", modalities=["text", "image"])


@pytest.mark.parametrize("kwargs, param", [
    ({"top_logprobs": 2}, "top_logprobs"),  # without logprobs
    ({"logit_bias": {"abc": 3}}, "logit_bias"),
    ({"logit_bias": {"999999": 3}}, "logit_bias"),  # not a token of this model
    ({"stream_options": {"include_usage": True}}, "stream_options"),  # without stream
    ({"messages": [{"role": "user", "content": "hi", "name": "ada"}]}, "messages[0].name"),
    ({"presence_penalty": 3}, "presence_penalty"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "wrong"}}}},
     "response_format.json_schema.schema"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]},
     "tools[0].function.parameters"),
    ({"tool_choice": "required"}, "tool_choice"),  # no tools
])
def test_bad_values_are_400s_naming_the_field(client, kwargs, param):
    refused(client, param, **kwargs)


def test_tools_on_a_template_without_a_tool_format_are_refused(tiny_lm):
    with BackgroundServer(create_app(tiny_lm, ServeSettings(max_tokens=8))) as running:
        local = openai.OpenAI(base_url=running.url + "/v1", api_key="none", max_retries=0)
        refused(local, "tools", tools=[WEATHER])


# logprobs, penalties, logit_bias, n ---------------------------------------------------------------------
def test_logprobs_and_top_logprobs(client):
    reply = client.chat.completions.create(model="m", messages=user("hello"), max_tokens=6, logprobs=True,
                                           top_logprobs=3, **GREEDY)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens == 6
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].token == entry.token  # greedy picks the most likely token
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
    assert "".join(e.token for e in content) == reply.choices[0].message.content
    streamed = client.chat.completions.create(model="m", messages=user("hello"), max_tokens=6, logprobs=True,
                                              stream=True, **GREEDY)
    tokens = [e.token for chunk in streamed if chunk.choices and chunk.choices[0].logprobs
              for e in chunk.choices[0].logprobs.content]
    assert tokens == [e.token for e in content]


def test_logit_bias_forces_a_token_and_penalties_change_the_answer(client, lm):
    token = lm.processor.tokenizer.encode(" circle")[0]
    biased = client.chat.completions.create(model="m", messages=user("hi"), max_tokens=4,
                                            logit_bias={str(token): 100}, **GREEDY)
    assert biased.choices[0].message.content == lm.processor.tokenizer.decode([token] * 4)
    penalties = {"frequency_penalty": 2, "presence_penalty": 1.5}
    plain = client.chat.completions.create(model="m", messages=user("hi"), max_tokens=24, **GREEDY)
    penalised = client.chat.completions.create(model="m", messages=user("hi"), max_tokens=24, **penalties, **GREEDY)
    assert penalised.choices[0].message.content == lm.chat("hi", max_new_tokens=24, ignore_eos=True, **penalties)
    assert penalised.choices[0].message.content != plain.choices[0].message.content


def test_penalties_and_bias_shape_a_row_as_openai_describes():
    from omnilm.decoding import RowDecoding
    from omnilm.generation import GenerationSettings

    settings = GenerationSettings(presence_penalty=0.5, frequency_penalty=1.0, logit_bias={7: -3.0})
    row = RowDecoding(settings, tokenizer=None)
    for token in (3, 3, 5):
        row.accept(token)
    scores = torch.zeros(10)
    row.shape(scores)
    expected = torch.zeros(10)
    expected[3], expected[5], expected[7] = -2.5, -1.5, -3.0  # count · frequency + presence; bias added
    assert torch.equal(scores, expected)


def test_n_choices_greedy_identical_sampled_different(client):
    greedy = client.chat.completions.create(model="m", messages=user("hi"), max_tokens=8, n=3, **GREEDY)
    assert [c.index for c in greedy.choices] == [0, 1, 2]
    assert len({c.message.content for c in greedy.choices}) == 1
    assert greedy.usage.completion_tokens == 24
    sampled = client.chat.completions.create(model="m", messages=user("hi"), max_tokens=12, n=3, temperature=1.5,
                                             seed=1, extra_body={"ignore_eos": True})
    assert len({c.message.content for c in sampled.choices}) > 1
    chunks = client.chat.completions.create(model="m", messages=user("hi"), max_tokens=8, n=2, stream=True, **GREEDY)
    texts = {0: "", 1: ""}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts[0] == texts[1] == greedy.choices[0].message.content


def test_completions_take_a_plain_prompt(client, lm):
    expected = lm.chat(PlainPrompt("The capital of"), max_new_tokens=6, ignore_eos=True)
    reply = client.completions.create(model="m", prompt="The capital of", max_tokens=6, temperature=0, logprobs=2,
                                      extra_body={"ignore_eos": True})
    assert reply.object == "text_completion" and reply.choices[0].text == expected
    assert len(reply.choices[0].logprobs.tokens) == 6 and len(reply.choices[0].logprobs.top_logprobs[0]) == 2
    streamed = client.completions.create(model="m", prompt="The capital of", max_tokens=6, temperature=0,
                                         stream=True, extra_body={"ignore_eos": True})
    assert "".join(c.choices[0].text for c in streamed) == expected
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="m", prompt="x", max_tokens=2, echo=True)


# Structured output -------------------------------------------------------------------------------------
class Shape(pydantic.BaseModel):
    shape: str = pydantic.Field(max_length=10)
    sides: int
    filled: bool


@pytest.mark.parametrize("with_image", [False, True])
def test_parse_with_a_pydantic_model_always_parses(client, with_image):
    messages = user(img(image_url()), "describe") if with_image else user("describe the shape")
    for seed in range(3):
        reply = client.chat.completions.parse(model="m", messages=messages, response_format=Shape, max_tokens=96,
                                              temperature=1.0, seed=seed)
        assert isinstance(reply.choices[0].message.parsed, Shape), reply.choices[0].message.content


def test_json_schema_is_followed_and_streams(client):
    schema = {"type": "object", "additionalProperties": False, "required": ["colors", "count"],
              "properties": {"colors": {"type": "array", "maxItems": 3,
                                        "items": {"enum": ["red", "green", "blue"]}},
                             "count": {"type": "integer", "minimum": 0, "maximum": 9}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "colors", "schema": schema, "strict": True}}
    reply = client.chat.completions.create(model="m", messages=user("colors?"), max_tokens=64, response_format=fmt)
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)
    assert reply.choices[0].finish_reason == "stop"
    chunks = client.chat.completions.create(model="m", messages=user("colors?"), max_tokens=64, response_format=fmt,
                                            stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply.choices[0].message.content


def test_json_object_starts_an_object(client):
    reply = client.chat.completions.create(model="m", messages=user("json please"), max_tokens=48,
                                           response_format={"type": "json_object"})
    text = reply.choices[0].message.content
    assert text.startswith("{")
    if reply.choices[0].finish_reason == "stop":  # a random model may also run out of tokens inside a string
        assert isinstance(json.loads(text), dict)


# Tools -------------------------------------------------------------------------------------------------
def test_tool_round_trip_with_the_official_client(client):
    messages = user("what is the weather in Paris?")
    called = client.chat.completions.create(model="m", messages=messages, tools=[WEATHER, TIME], max_tokens=96,
                                            tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = called.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"sky": "sunny"})}]
    final = client.chat.completions.create(model="m", messages=messages, tools=[WEATHER, TIME], tool_choice="none",
                                           max_tokens=8)
    assert final.choices[0].finish_reason in ("stop", "length") and final.choices[0].message.content
    assert not final.choices[0].message.tool_calls


def test_required_tool_choice_streams_tool_call_deltas(client):
    chunks = list(client.chat.completions.create(model="m", messages=user("time?"), tools=[WEATHER, TIME],
                                                 tool_choice="required", max_tokens=96, stream=True))
    deltas = [t for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or [])]
    name = next(d.function.name for d in deltas if d.function.name)
    arguments = "".join(d.function.arguments or "" for d in deltas)
    assert name in ("get_weather", "get_time") and isinstance(json.loads(arguments), dict)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_tool_message_without_its_call_id_is_a_400(server):
    body = {"messages": [*user("hi"), {"role": "tool", "content": "{}"}], "tools": [WEATHER], "max_tokens": 2}
    response = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages[1].tool_call_id"
