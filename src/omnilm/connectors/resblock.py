"""Residual-block connector: Linear to the LLM width, then a pre-norm residual MLP (the seed capstone)."""

from __future__ import annotations

import torch
from torch import nn


class ResBlockConnector(nn.Module):
    """features (B, T, C) → (B, T, D); the block refines the projection without losing it."""

    def __init__(self, *, in_dim: int, out_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden_dim = hidden_dim or out_dim
        self.proj = nn.Linear(in_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim)
        self.block = nn.Sequential(nn.Linear(out_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))

    @staticmethod
    def num_tokens(num_input_tokens: int, **options: object) -> int:
        return num_input_tokens

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.proj(features)  # (B, T, D)
        return x + self.block(self.norm(x))  # (B, T, D)
