"""Connectors map encoder features (B, T, C) to LLM embeddings (B, T', D). Registered by exact name."""

from __future__ import annotations

import inspect

from torch import nn

from omnilm.connectors.linear import LinearConnector
from omnilm.connectors.mlp import MLPConnector
from omnilm.connectors.perceiver import PerceiverConnector
from omnilm.connectors.qformer import QFormerConnector
from omnilm.connectors.resblock import ResBlockConnector
from omnilm.connectors.swiglu import SwiGLUConnector
from omnilm.errors import ConfigError

CONNECTORS: dict[str, type[nn.Module]] = {
    "linear": LinearConnector,
    "mlp": MLPConnector,
    "resblock": ResBlockConnector,
    "perceiver": PerceiverConnector,
    "qformer": QFormerConnector,
    "swiglu": SwiGLUConnector,  # Ultravox's audio projector
}


def connector_class(name: str) -> type[nn.Module]:
    try:
        return CONNECTORS[name]
    except KeyError:
        raise ConfigError(f"unknown connector {name!r}; choose one of {sorted(CONNECTORS)}") from None


def connector_options(name: str) -> tuple[str, ...]:
    """The options (keyword arguments beyond the widths) connector `name` accepts."""
    params = inspect.signature(connector_class(name).__init__).parameters
    widths = ("in_dim", "out_dim", "hidden_dim")
    return tuple(p for p, v in params.items() if v.kind is v.KEYWORD_ONLY and p not in widths)


def build_connector(name: str, *, in_dim: int, out_dim: int, hidden_dim: int | None = None, **options) -> nn.Module:
    """Instantiate connector `name` mapping width `in_dim` to `out_dim`."""
    return connector_class(name)(in_dim=in_dim, out_dim=out_dim, hidden_dim=hidden_dim, **options)


def connector_tokens(name: str, num_input_tokens: int, **options) -> int:
    """How many tokens connector `name` emits for `num_input_tokens` inputs (the processor asks this)."""
    return connector_class(name).num_tokens(num_input_tokens, **options)
