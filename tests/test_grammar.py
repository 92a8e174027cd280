"""Constrained decoding's grammars (omnilm.grammar): JSON schemas compiled by llguidance."""

import pytest

from omnilm.grammar import NUMBER_LIMIT, Grammar, bounded_numbers
from omnilm.testing import tiny_model

pytest.importorskip("llguidance")


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_model(("image",)).processor.tokenizer


def accepts(tokenizer, schema: dict, text: str) -> bool:
    """Whether `text` is a prefix the grammar of `schema` allows."""
    matcher, _ = Grammar.json(schema).matcher(tokenizer)
    return bool(matcher.consume_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])) \
        and not matcher.is_error()


def test_unbounded_numbers_get_a_bound_and_given_bounds_stay():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "x": {"type": "number", "minimum": 0},
                                               "items": {"type": "array", "items": {"type": "integer"}}}}
    bounded = bounded_numbers(schema)
    assert bounded["properties"]["n"] == {"type": "integer", "minimum": -NUMBER_LIMIT, "maximum": NUMBER_LIMIT}
    assert bounded["properties"]["x"] == {"type": "number", "minimum": 0, "maximum": NUMBER_LIMIT}
    assert bounded["properties"]["items"]["items"]["maximum"] == NUMBER_LIMIT
    assert schema["properties"]["n"] == {"type": "integer"}  # the client's schema is not changed


def test_a_number_cannot_run_on_until_the_token_budget_ends(tokenizer):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    assert accepts(tokenizer, schema, '{"n":1234567')
    assert not accepts(tokenizer, schema, '{"n":' + "1" * 40)
