"""A request body's sampling fields → `GenerationSettings`; `response_format` → a `Grammar`. Bad values: 400."""

from __future__ import annotations

from omnilm.errors import ConfigError, OmniError
from omnilm.generation import GenerationSettings
from omnilm.grammar import Grammar
from omnilm.serve.errors import APIError
from omnilm.serve.schemas import ResponseFormat, Sampling
from omnilm.serve.settings import ServeSettings


def generation_settings(body: Sampling, settings: ServeSettings, *, max_tokens: int | None, logprobs: bool,
                        top_logprobs: int, grammar: Grammar | None, vocab_size: int) -> GenerationSettings:
    """The settings of one choice; a value generation refuses is a 400 naming the request's field."""
    if body.stream_options is not None and not body.stream:
        raise APIError(400, "stream_options is only read with stream: true", param="stream_options")
    max_tokens = max_tokens or settings.default_max_tokens
    if max_tokens > settings.max_tokens:
        raise APIError(400, f"max_tokens is {max_tokens}; this server allows at most {settings.max_tokens}",
                       param="max_tokens")
    bias = {int(token): value for token, value in (body.logit_bias or {}).items()}
    if any(token >= vocab_size for token in bias):
        raise APIError(400, f"logit_bias names token {max(bias)}; this model's token ids are 0..{vocab_size - 1}",
                       param="logit_bias")
    try:
        return GenerationSettings.from_kwargs(
            max_new_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p, stop=body.stop,
            seed=body.seed, ignore_eos=body.ignore_eos, presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty, logit_bias=bias, logprobs=logprobs, top_logprobs=top_logprobs,
            grammar=grammar)
    except OmniError as err:
        field = getattr(err, "field", None) or ""
        raise APIError(400, str(err), param=field.removeprefix("generation.") or None) from None


def response_grammar(response_format: ResponseFormat | None) -> Grammar | None:
    """The grammar `response_format` asks for (None: free text); an invalid schema is a 400."""
    if response_format is None or response_format.type == "text":
        if response_format is not None and response_format.json_schema is not None:
            raise APIError(400, "response_format.json_schema is only read with type 'json_schema'",
                           param="response_format")
        return None
    if response_format.type == "json_object":
        return Grammar.json()
    if response_format.json_schema is None:
        raise APIError(400, "response_format type 'json_schema' needs a json_schema: {name, schema}",
                       param="response_format.json_schema")
    try:
        return Grammar.json(response_format.json_schema.schema_)
    except ConfigError as err:
        raise APIError(400, str(err).replace("generation.grammar", "response_format.json_schema.schema"),
                       param="response_format.json_schema.schema") from None
