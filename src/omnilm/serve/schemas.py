"""Request bodies of the OpenAI-compatible API (the fields omnilm honours; unknown fields are ignored)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None  # a string or OpenAI content parts


class StreamOptions(BaseModel):
    include_usage: bool = False  # send a last chunk with token counts (OpenAI's opt-in)


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None  # one model is served; any name is accepted
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # OpenAI's newer name for max_tokens
    temperature: float | None = Field(None, ge=0.0, le=2.0)  # None, 0: greedy (unlike OpenAI's 1.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list)  # a string or up to 4 strings
    seed: int | None = None
    n: int = Field(1, ge=1, le=1)  # one choice per request
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False  # vLLM's extension: generate exactly max_tokens (benchmarks)

    @field_validator("stop", mode="before")
    @classmethod
    def _check_stop(cls, value: Any) -> list:
        stops = [] if value is None else [value] if isinstance(value, str) else value
        if isinstance(stops, list) and (len(stops) > 4 or any(not s for s in stops)):
            raise ValueError("stop takes at most 4 non-empty strings")
        return stops
