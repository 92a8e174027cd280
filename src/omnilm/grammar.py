"""Constrained decoding: a `Grammar` (JSON schema, any JSON object, or a Lark grammar) compiled by llguidance.

llguidance was chosen by measuring on this CPU (bench/bench_api.py `grammar_libraries`): its token mask
takes microseconds per step and a schema compiles in about a millisecond, where outlines-core needs ~0.2 s
per schema plus ~3 ms per token, lm-format-enforcer does not import with transformers 5 and xgrammar pulls
triton. A `Grammar` is plain, hashable data so it sits in `GenerationSettings`; `matcher(tokenizer)` makes
the per-row state that says which tokens may come next.
"""

from __future__ import annotations

import json
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from omnilm.configkit import require
from omnilm.errors import ConfigError

KINDS = ("json_schema", "json_object", "lark")
ANY_OBJECT = {"type": "object"}
NUMBER_LIMIT = 2**53 - 1  # the largest integer a JSON parser's double keeps exactly


@dataclass(frozen=True)
class Grammar:
    """What the answer must match. `source`: a JSON schema as JSON text (json_schema), or a Lark grammar."""

    kind: str
    source: str = ""

    def __post_init__(self) -> None:
        require(self.kind in KINDS, "generation.grammar.kind", f"must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind == "json_schema":
            check_schema(json.loads(self.source), "generation.grammar")
        import llguidance

        problem = llguidance.LLMatcher.validate_grammar(self._llguidance_grammar())
        require(not problem or problem.startswith("WARNING"), "generation.grammar",
                f"the grammar cannot be compiled: {problem}")

    @classmethod
    def json(cls, schema: dict | None = None) -> Grammar:
        """Any JSON object (None) or JSON matching `schema`."""
        if schema is None:
            return cls("json_object")
        return cls("json_schema", json.dumps(schema, sort_keys=True))

    def _llguidance_grammar(self) -> str:
        import llguidance

        if self.kind == "lark":
            return llguidance.LLMatcher.grammar_from_lark(self.source)
        schema = ANY_OBJECT if self.kind == "json_object" else bounded_numbers(json.loads(self.source))
        return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})

    def matcher(self, tokenizer) -> tuple[Any, int]:
        """A fresh llguidance matcher for one answer, and the vocabulary size its masks cover."""
        import llguidance

        ll = _ll_tokenizer(tokenizer)
        return llguidance.LLMatcher(ll, self._llguidance_grammar()), ll.vocab_size


def bounded_numbers(schema: Any) -> Any:
    """`schema` with every integer or number that has no bound given ±NUMBER_LIMIT: without one, a small model
    can write "1000000…" until the token budget ends, and the answer never closes (the limit is far beyond
    what a float keeps exactly, so no value a client could mean is lost)."""
    if isinstance(schema, list):
        return [bounded_numbers(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    bounded = {key: bounded_numbers(value) for key, value in schema.items()}
    if schema.get("type") in ("integer", "number"):
        if not {"minimum", "exclusiveMinimum"} & schema.keys():
            bounded["minimum"] = -NUMBER_LIMIT
        if not {"maximum", "exclusiveMaximum"} & schema.keys():
            bounded["maximum"] = NUMBER_LIMIT
    return bounded


def check_schema(schema: Any, field: str) -> None:
    """Raise a ConfigError naming `field` unless `schema` is a valid JSON schema."""
    import jsonschema

    if not isinstance(schema, dict):
        raise ConfigError(f"{field}: a JSON schema must be an object, got {type(schema).__name__}", field=field)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as err:
        raise ConfigError(f"{field}: invalid JSON schema: {err.message}", field=field) from None


_TOKENIZERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _ll_tokenizer(tokenizer) -> Any:
    """llguidance's view of a transformers tokenizer, built once per tokenizer (about a second for 150k tokens)."""
    import llguidance.hf

    with _LOCK:
        ll = _TOKENIZERS.get(tokenizer)
        if ll is None:
            ll = _TOKENIZERS[tokenizer] = llguidance.hf.from_tokenizer(tokenizer)
        return ll
