"""Video encoder: sampled frames → vision encoder → temporal pooling + frame-order embedding (+ frame change)."""

from __future__ import annotations

import torch
from torch import nn


class VideoEncoder(nn.Module):
    """Per-frame features of the shared vision encoder (N, F, T, C) → video features (N, (F/p)·T, C).

    Groups of p consecutive frames are averaged, and a learned per-position embedding marks each pooled
    frame's place in time (unless `frame_order` is false: then only the tokens' order in the sequence does).
    With `frame_delta`, a learned projection of what changed since the previous slot is added to each slot
    (zero at the start, so a new model pools as it would without it): a change of scene becomes something
    a token carries instead of something the LLM must find by comparing tokens.
    """

    def __init__(self, *, num_frames: int, temporal_pool: int, dim: int, frame_order: bool = True,
                 frame_delta: bool = False) -> None:
        super().__init__()
        self.temporal_pool = temporal_pool
        self.num_slots = num_frames // temporal_pool
        self.frame_position = nn.Parameter(torch.randn(self.num_slots, dim) * 0.02) if frame_order else None  # (F/p, C)
        self.frame_delta = nn.Linear(dim, dim, bias=False) if frame_delta else None
        if self.frame_delta is not None:
            nn.init.zeros_(self.frame_delta.weight)

    def pool(self, per_frame: torch.Tensor) -> torch.Tensor:
        """Per-frame vision features (N, F, T, C) → (N, (F/p)·T, C)."""
        n, f, t, c = per_frame.shape
        slots = per_frame.reshape(n, f // self.temporal_pool, self.temporal_pool, t, c).mean(2)  # (N, F/p, T, C)
        if self.frame_delta is not None:
            change = torch.cat([torch.zeros_like(slots[:, :1]), slots[:, 1:] - slots[:, :-1]], dim=1)  # (N, F/p, T, C)
            slots = slots + self.frame_delta(change.to(self.frame_delta.weight.dtype)).to(slots.dtype)
        if self.frame_position is not None:
            slots = slots + self.frame_position[:, None, :].to(slots.dtype)  # mark frame order
        return slots.reshape(n, -1, c)  # (N, (F/p)·T, C)
