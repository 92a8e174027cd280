"""Perceiver resampler (Flamingo): learned latents cross-attend to the media, a fixed token count out."""

from __future__ import annotations

import torch
from torch import nn

from omnilm.connectors.attention import Attention, feed_forward, require_positive


class PerceiverLayer(nn.Module):
    """latents (B, N, W), media (B, T, W) → latents (B, N, W); keys are [media; latents] as in Flamingo."""

    def __init__(self, *, width: int, heads: int) -> None:
        super().__init__()
        self.norm_media = nn.LayerNorm(width)
        self.norm_latents = nn.LayerNorm(width)
        self.attn = Attention(dim=width, heads=heads, where="connectors.*.options.heads (perceiver)")
        self.ff = feed_forward(width)

    def forward(self, latents: torch.Tensor, media: torch.Tensor) -> torch.Tensor:
        q = self.norm_latents(latents)  # (B, N, W)
        context = torch.cat([self.norm_media(media), q], dim=1)  # (B, T + N, W)
        latents = latents + self.attn(q, context)  # (B, N, W)
        return latents + self.ff(latents)  # (B, N, W)


class PerceiverConnector(nn.Module):
    """features (B, T, C) → (B, N, D) for any T; N = `num_latents`.

    Legend: C encoder width, W resampler width (`hidden_dim`, default C as in Flamingo), D LLM width.
    Position is whatever the features carry (ViT/Whisper positions, the video frame embedding).
    """

    def __init__(
        self,
        *,
        in_dim: int,
        out_dim: int,
        hidden_dim: int | None = None,
        num_latents: int = 64,  # tokens per media item: Flamingo uses 64
        depth: int = 2,  # resampler layers: Flamingo uses 6
        heads: int = 8,
    ) -> None:
        super().__init__()
        require_positive("perceiver", num_latents=num_latents, depth=depth, heads=heads)
        width = hidden_dim or in_dim
        self.proj_in = nn.Linear(in_dim, width) if width != in_dim else nn.Identity()
        self.latents = nn.Parameter(torch.randn(num_latents, width) * 0.02)  # (N, W)
        self.layers = nn.ModuleList(PerceiverLayer(width=width, heads=heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.proj_out = nn.Linear(width, out_dim)

    @staticmethod
    def num_tokens(num_input_tokens: int, *, num_latents: int = 64, **options: object) -> int:
        return num_latents

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        media = self.proj_in(features)  # (B, T, W)
        latents = self.latents.expand(media.shape[0], -1, -1)  # (B, N, W)
        for layer in self.layers:
            latents = layer(latents, media)  # (B, N, W)
        return self.proj_out(self.norm(latents))  # (B, N, D)
