"""Request bodies of the OpenAI-compatible API. Every field listed here is honoured; any other is a 400 naming it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

STRICT = ConfigDict(extra="forbid")  # a field omnilm does not honour is refused, never ignored


class FunctionCall(BaseModel):
    model_config = STRICT

    name: str
    arguments: str  # JSON text, as the API sends it


class ToolCall(BaseModel):
    model_config = STRICT

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = STRICT

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None  # a string or OpenAI content parts
    name: str | None = None  # a participant's name: shown to the template as the message's name
    tool_calls: list[ToolCall] | None = None  # an assistant's earlier calls
    tool_call_id: str | None = None  # a tool message: the call it answers
    refusal: str | None = None  # echoed back by clients in assistant turns; must be empty
    parsed: Any = None  # an echoed `parse()` reply's object: the same as its content, which is what is read


class StreamOptions(BaseModel):
    model_config = STRICT

    include_usage: bool = False  # send a last chunk with token counts (OpenAI's opt-in)


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: bool | None = None  # the answer always matches the schema here, strict or not


class ResponseFormat(BaseModel):
    model_config = STRICT

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class FunctionDefinition(BaseModel):
    model_config = STRICT

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None  # a forced call's arguments always match `parameters` here


class Tool(BaseModel):
    model_config = STRICT

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    model_config = STRICT

    name: str


class NamedToolChoice(BaseModel):
    model_config = STRICT

    type: Literal["function"]
    function: NamedFunction


class Sampling(BaseModel):
    """The fields chat completions and completions share."""

    model_config = STRICT

    model: str | None = None  # one model is served; any name is accepted
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)  # None, 0: greedy (unlike OpenAI's 1.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list)  # a string or up to 4 strings
    seed: int | None = None
    n: int = Field(1, ge=1, le=16)  # choices per request
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None  # token id (as text) → bias in -100..100
    user: str | None = None  # an end-user id for the operator's logs; it does not change the answer
    ignore_eos: bool = False  # vLLM's extension: generate exactly max_tokens (benchmarks)

    @field_validator("stop", mode="before")
    @classmethod
    def _check_stop(cls, value: Any) -> list:
        stops = [] if value is None else [value] if isinstance(value, str) else value
        if isinstance(stops, list) and (len(stops) > 4 or any(not s for s in stops)):
            raise ValueError("stop takes at most 4 non-empty strings")
        return stops

    @field_validator("logit_bias")
    @classmethod
    def _check_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for token, bias in (value or {}).items():
            if not token.isdigit() or not -100 <= bias <= 100:
                raise ValueError(f"maps token ids to biases in -100..100; got {token!r}: {bias}")
        return value


class ChatCompletionRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # OpenAI's newer name for max_tokens
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True  # False: at most one call per answer
    # ["text"] (what some clients always send); a spoken reply (["text", "audio"] + audio) is taken by the voice
    # middleware (serve/spoken_chat.py) before the request reaches this schema
    modalities: list[Literal["text"]] | None = None


class CompletionRequest(Sampling):
    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=5)  # the legacy API's top-k count
    echo: Literal[False] = False  # the prompt is not repeated in the answer
    best_of: int | None = Field(None, ge=1)  # only best_of == n (no re-ranking)
