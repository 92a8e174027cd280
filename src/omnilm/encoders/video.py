"""Video encoder: sampled frames → vision encoder → temporal pooling + frame-order embedding."""

from __future__ import annotations

import torch
from torch import nn


class VideoEncoder(nn.Module):
    """Per-frame features of the shared vision encoder (N, F, T, C) → video features (N, (F/p)·T, C).

    Groups of p consecutive frames are averaged, and a learned per-position embedding marks each pooled
    frame's place in time (unless `frame_order` is false: then only the tokens' order in the sequence does).
    """

    def __init__(self, *, num_frames: int, temporal_pool: int, dim: int, frame_order: bool = True) -> None:
        super().__init__()
        self.temporal_pool = temporal_pool
        self.num_slots = num_frames // temporal_pool
        self.frame_position = nn.Parameter(torch.randn(self.num_slots, dim) * 0.02) if frame_order else None  # (F/p, C)

    def pool(self, per_frame: torch.Tensor) -> torch.Tensor:
        """Per-frame vision features (N, F, T, C) → (N, (F/p)·T, C)."""
        n, f, t, c = per_frame.shape
        slots = per_frame.reshape(n, f // self.temporal_pool, self.temporal_pool, t, c).mean(2)  # (N, F/p, T, C)
        if self.frame_position is not None:
            slots = slots + self.frame_position[:, None, :].to(slots.dtype)  # mark frame order
        return slots.reshape(n, -1, c)  # (N, (F/p)·T, C)
