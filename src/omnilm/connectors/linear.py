"""Linear connector: one projection from encoder width to LLM width (LLaVA 1.0)."""

from __future__ import annotations

import torch
from torch import nn


class LinearConnector(nn.Module):
    """features (B, T, C) → (B, T, D)."""

    def __init__(self, *, in_dim: int, out_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        del hidden_dim  # a single layer has no hidden width
        self.proj = nn.Linear(in_dim, out_dim)

    @staticmethod
    def num_tokens(num_input_tokens: int, **options: object) -> int:
        return num_input_tokens

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(features)  # (B, T, C) → (B, T, D)
