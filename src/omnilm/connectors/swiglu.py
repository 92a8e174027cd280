"""Ultravox-style connector: RMSNorm → Linear → SwiGLU → RMSNorm → Linear (Ultravox v0.5's projector).

The k-frame stacking happens before it, in the audio encoder (`audio.stack_factor`): Whisper's 50 Hz frames
(T, C) become (T/k, kC) exactly as Ultravox's `StackAudioFrames` does (k consecutive frames side by side), and
the processor pads each clip to whole tokens, so this module keeps the token count.

Parameter names and layout follow the projector vLLM and llama.cpp load from Ultravox checkpoints
(`multi_modal_projector.{ln_pre,linear_1,ln_mid,linear_2}.weight`, no biases), so exporting is a rename.
The SwiGLU halves the width, and its gate is the SECOND half: `x[:d] * silu(x[d:])` (vLLM's `MulAndSilu`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from omnilm.errors import ConfigError

RMS_EPS = 1e-6  # Ultravox's and vLLM's RMSNorm epsilon


class SwiGLU(nn.Module):
    """x (…, 2d) → x[…, :d] · silu(x[…, d:]) (…, d): the second half gates the first."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = x.chunk(2, dim=-1)  # (…, d) each
        return value * F.silu(gate)


class SwiGLUConnector(nn.Module):
    """stacked frames (B, T, kC) → (B, T, D).

    `hidden_dim` (default: the LLM width D) is linear_1's output; the SwiGLU halves it, so it must be even.
    """

    def __init__(self, *, in_dim: int, out_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden_dim = hidden_dim or out_dim
        if hidden_dim % 2:
            raise ConfigError(f"the swiglu connector's hidden_dim must be even (the SwiGLU halves it), got {hidden_dim}")
        self.ln_pre = nn.RMSNorm(in_dim, eps=RMS_EPS)
        self.linear_1 = nn.Linear(in_dim, hidden_dim, bias=False)
        self.act = SwiGLU()
        self.ln_mid = nn.RMSNorm(hidden_dim // 2, eps=RMS_EPS)
        self.linear_2 = nn.Linear(hidden_dim // 2, out_dim, bias=False)

    @staticmethod
    def num_tokens(num_input_tokens: int, **options: object) -> int:
        return num_input_tokens  # the encoder's stacking already set the count

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.linear_1(self.ln_pre(features))  # (B, T, kC) → (B, T, H)
        x = self.ln_mid(self.act(x))  # (B, T, H/2)
        return self.linear_2(x)  # (B, T, D)
