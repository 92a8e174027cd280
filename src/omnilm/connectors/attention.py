"""Attention building blocks shared by the perceiver, the Q-Former and gated cross-attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from omnilm.errors import ConfigError


def head_dim(width: int, heads: int, where: str) -> int:
    """Width of one head; a width the heads do not divide is a config error naming `where`."""
    if heads < 1 or width % heads:
        raise ConfigError(f"{where}: {heads} heads do not divide the width {width}; choose heads dividing {width}")
    return width // heads


def require_positive(where: str, **values: int) -> None:
    """Raise a ConfigError naming each option of `where` that is not a positive integer."""
    bad = [f"{k}={v!r}" for k, v in values.items() if not isinstance(v, int) or v < 1]
    if bad:
        raise ConfigError(f"{where}: {', '.join(bad)} must be positive integers")


class Attention(nn.Module):
    """Multi-head attention of queries (B, L, D) over a context (B, M, C) → (B, L, D).

    Keys and values can be computed once (`keys_values`) and reused, as cross-attention during
    generation does: the context (media) does not change from step to step.
    """

    def __init__(self, *, dim: int, context_dim: int | None = None, heads: int, where: str = "attention") -> None:
        super().__init__()
        self.heads = heads
        head_dim(dim, heads, where)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim or dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """context (B, M, C) → keys, values (B, H, M, D/H)."""
        k, v = self.to_kv(context).chunk(2, dim=-1)  # (B, M, D) each
        return self._split(k), self._split(v)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, L, D); context (B, M, C) or precomputed `kv`; mask (B, L, M), True where allowed."""
        k, v = kv if kv is not None else self.keys_values(x if context is None else context)
        q = self._split(self.to_q(x))  # (B, H, L, D/H)
        attn_mask = None if mask is None else mask[:, None]  # (B, 1, L, M): same mask for every head
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, L, D/H)
        return self.to_out(out.transpose(1, 2).flatten(2))  # (B, L, D)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, d = t.shape
        return t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)  # (B, N, D) → (B, H, N, D/H)


def feed_forward(dim: int, mult: int = 4) -> nn.Sequential:
    """Pre-norm MLP: LayerNorm → Linear(D, mD) → GELU → Linear(mD, D)."""
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, mult * dim), nn.GELU(), nn.Linear(mult * dim, dim))
