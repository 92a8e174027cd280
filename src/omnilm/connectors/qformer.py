"""Q-Former (BLIP-2): learned queries with self-attention and cross-attention to the encoder features,
then a projection to the LLM width."""

from __future__ import annotations

import torch
from torch import nn

from omnilm.connectors.attention import Attention, feed_forward, require_positive

WHERE = "connectors.*.options.heads (qformer)"


class QFormerLayer(nn.Module):
    """queries (B, Q, W), features (B, T, C) → queries (B, Q, W): self-attn, [cross-attn], MLP (pre-norm)."""

    def __init__(self, *, width: int, context_dim: int, heads: int, cross: bool) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(width)
        self.self_attn = Attention(dim=width, heads=heads, where=WHERE)
        self.norm_cross = nn.LayerNorm(width) if cross else None
        self.cross_attn = Attention(dim=width, context_dim=context_dim, heads=heads, where=WHERE) if cross else None
        self.ff = feed_forward(width)

    def forward(self, queries: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        queries = queries + self.self_attn(self.norm_self(queries))  # (B, Q, W)
        if self.cross_attn is not None:
            queries = queries + self.cross_attn(self.norm_cross(queries), features)  # (B, Q, W)
        return queries + self.ff(queries)  # (B, Q, W)


class QFormerConnector(nn.Module):
    """features (B, T, C) → (B, Q, D) for any T; Q = `num_queries`.

    Legend: C encoder width, W query width (`hidden_dim`, default C; BLIP-2's is 768), D LLM width.
    """

    def __init__(
        self,
        *,
        in_dim: int,
        out_dim: int,
        hidden_dim: int | None = None,
        num_queries: int = 32,  # tokens per media item: BLIP-2 uses 32
        depth: int = 2,  # BLIP-2's Q-Former has 12 (BERT-base)
        heads: int = 8,
        cross_every: int = 1,  # cross-attention in every k-th layer: BLIP-2 uses 2
    ) -> None:
        super().__init__()
        require_positive("qformer", num_queries=num_queries, depth=depth, heads=heads, cross_every=cross_every)
        width = hidden_dim or in_dim
        self.norm_features = nn.LayerNorm(in_dim)  # BLIP-2's `ln_vision`
        self.queries = nn.Parameter(torch.randn(num_queries, width) * 0.02)  # (Q, W)
        self.layers = nn.ModuleList(
            QFormerLayer(width=width, context_dim=in_dim, heads=heads, cross=i % cross_every == 0) for i in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, out_dim)  # BLIP-2's `language_projection`

    @staticmethod
    def num_tokens(num_input_tokens: int, *, num_queries: int = 32, **options: object) -> int:
        return num_queries

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = self.norm_features(features)  # (B, T, C)
        queries = self.queries.expand(features.shape[0], -1, -1)  # (B, Q, W)
        for layer in self.layers:
            queries = layer(queries, features)  # (B, Q, W)
        return self.proj(self.norm(queries))  # (B, Q, D)
