"""MLP connector: Linear → GELU → Linear (LLaVA 1.5's `mlp2x_gelu`)."""

from __future__ import annotations

import torch
from torch import nn


class MLPConnector(nn.Module):
    """features (B, T, C) → (B, T, D)."""

    def __init__(self, *, in_dim: int, out_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden_dim = hidden_dim or out_dim
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))

    @staticmethod
    def num_tokens(num_input_tokens: int, **options: object) -> int:
        return num_input_tokens

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)  # (B, T, C) → (B, T, D)
