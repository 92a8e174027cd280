"""Gated cross-attention fusion (Flamingo) for any transformers decoder-only LLM.

A block runs before every k-th decoder layer, attached with a forward pre-hook: the LLM's modules and
state-dict names stay untouched (it may stay frozen, carry LoRA, save as itself). The blocks live here.
Each text token attends only to the media item placed most recently before it (Flamingo's
"immediate media"); tokens before any media see none. Gates are tanh(0) = 0, so a fresh model computes
exactly what the bare LLM computes. `embed` prepares the media of a batch as a `MediaContext`; inside
`attending(context)` (one forward, or one whole generation) the blocks attend to them, computing each
block's media keys/values once and reusing them at every decoding step.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from omnilm.connectors.attention import Attention, feed_forward
from omnilm.errors import ConfigError, PlaceholderMismatchError


def decoder_layers(llm: nn.Module) -> nn.ModuleList:
    """The decoder layers of `llm`: the first ModuleList of num_hidden_layers same-typed modules."""
    config = llm.config.get_text_config() if hasattr(llm.config, "get_text_config") else llm.config
    n = getattr(config, "num_hidden_layers", None)
    for _, module in llm.named_modules():  # pre-order: outer lists come before lists inside a layer
        if isinstance(module, nn.ModuleList) and len(module) == n and len({type(m) for m in module}) == 1:
            return module
    raise ConfigError(f"fusion: found no list of {n} decoder layers in {type(llm).__name__}; gated_xattn needs one")


class GatedCrossAttentionBlock(nn.Module):
    """hidden (B, L, D) attends to media (B, M, D) → (B, L, D); the identity while its gates are 0."""

    def __init__(self, *, dim: int, heads: int, ff_mult: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim=dim, heads=heads, where="fusion.heads")
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.ff = feed_forward(dim, ff_mult)
        self.ff_gate = nn.Parameter(torch.zeros(1))

    def forward(
        self, hidden: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor] | None, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """kv: keys, values (B, H, M, D/H) of the media, or None; mask (B, L, M), True where a token may look.

        The feed-forward branch acts on every token, media or not, as in Flamingo.
        """
        if kv is not None:
            sees_media = mask.any(-1, keepdim=True)  # (B, L, 1)
            out = self.attn(self.norm(hidden), kv=kv, mask=mask | ~sees_media)  # (B, L, D); blind rows zeroed next
            hidden = hidden + self.attn_gate.tanh() * out * sees_media
        return hidden + self.ff_gate.tanh() * self.ff(hidden)  # (B, L, D)


@dataclass
class MediaContext:
    """The media of one batch: what the blocks attend to during one forward or one generation."""

    media: torch.Tensor  # (B, M, D) each row's media tokens, items in text order, zero-padded
    media_item: torch.Tensor  # (B, M) 1-based item number of each media token within its row; 0 = padding
    text_item: torch.Tensor  # (B, L) number of the latest item at or before each prompt position; 0 = none
    kv: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # per block, computed once

    def mask(self, batch: int, length: int) -> torch.Tensor:
        """(B', L, M): which media tokens each of `length` positions sees (prompt, or tokens after it)."""
        text = self.text_item if length == self.text_item.shape[1] else self.text_item[:, -1:].expand(-1, length)
        mask = (text[:, :, None] == self.media_item[:, None, :]) & (self.media_item[:, None, :] > 0)
        return mask.repeat_interleave(batch // mask.shape[0], dim=0)  # beams / samples share their row's media


class GatedXAttnFusion(nn.Module):
    """Gated cross-attention blocks hooked before decoder layers 0, k, 2k, … of `llm`."""

    def __init__(self, llm: nn.Module, *, modalities: tuple[str, ...], every: int, heads: int, ff_mult: int) -> None:
        super().__init__()
        embedding = llm.get_input_embeddings()
        dim = embedding.embedding_dim
        layers = decoder_layers(llm)
        self.blocks = nn.ModuleDict(
            {
                str(i): GatedCrossAttentionBlock(dim=dim, heads=heads, ff_mult=ff_mult)
                for i in range(0, len(layers), every)
            }
        )
        # the single placeholder token of each item gets a learned embedding (Flamingo trains <image>)
        mean = embedding.weight.detach().float().mean(0)  # (D,)
        self.media_token = nn.ParameterDict({m: nn.Parameter(mean.clone()) for m in modalities})
        self.to(embedding.weight.dtype)
        self.context: MediaContext | None = None  # what the hooks attend to now (set only inside `attending`)
        self.active = False  # blocks run only inside `attending()`: elsewhere the LLM is itself
        for key in self.blocks:
            layers[int(key)].register_forward_pre_hook(self._hook(key), with_kwargs=True)

    @contextlib.contextmanager
    def attending(self, context: MediaContext | None):
        """Let the blocks see `context` (from `embed`; None: no media) during the LLM calls made in this scope."""
        self.context, self.active = context, True
        try:
            yield
        finally:
            self.context, self.active = None, False

    def embed(
        self, input_ids: torch.Tensor, items: dict[str, list[torch.Tensor]], placeholder_ids: dict[str, int], embedding
    ) -> tuple[torch.Tensor, MediaContext | None]:
        """input_ids (B, L) with one placeholder per item; items: per modality, (T_i, D) features in order.

        Returns the token embeddings (B, L, D) and the media for `attending` (None when the batch has none).
        """
        is_media = torch.zeros_like(input_ids, dtype=torch.bool)
        for token_id in placeholder_ids.values():
            is_media |= input_ids == token_id
        embeds = embedding(input_ids.masked_fill(is_media, 0))  # (B, L, D)
        slots = []  # (row, column, features) of every item
        for modality, token_id in placeholder_ids.items():
            positions = (input_ids == token_id).nonzero().tolist()  # row-major: the processor's item order
            feats = items.get(modality, [])
            if len(positions) != len(feats):
                raise PlaceholderMismatchError(
                    f"{modality}: the input has {len(positions)} placeholder tokens but {len(feats)} media items; "
                    "with fusion.mode=gated_xattn each item takes exactly one placeholder (OmniProcessor does this)"
                )
            if positions:
                mask = (input_ids == token_id)[..., None]  # (B, L, 1)
                embeds = torch.where(mask, self.media_token[modality].to(embeds.dtype), embeds)
            slots += [(r, c, f) for (r, c), f in zip(positions, feats)]
        if not slots:
            return embeds, None
        rows = [sorted((c, f) for r, c, f in slots if r == row) for row in range(input_ids.shape[0])]
        width = max(sum(f.shape[0] for _, f in row) for row in rows)
        media = embeds.new_zeros(input_ids.shape[0], width, embeds.shape[-1])  # (B, M, D)
        media_item = torch.zeros(media.shape[:2], dtype=torch.long, device=media.device)  # (B, M)
        for b, row in enumerate(rows):
            start = 0
            for number, (_, feats) in enumerate(row, start=1):
                media[b, start : start + feats.shape[0]] = feats.to(media.dtype)
                media_item[b, start : start + feats.shape[0]] = number
                start += feats.shape[0]
        return embeds, MediaContext(media, media_item, is_media.long().cumsum(1))

    def _hook(self, key: str):
        block = self.blocks[key]

        def hook(module: nn.Module, args: tuple, kwargs: dict):
            if not self.active:
                return None
            context = self.context
            hidden = args[0] if args else kwargs["hidden_states"]  # (B, L, D)
            if context is None:  # no media in this batch
                hidden = block(hidden, None, None)
            else:
                if key not in context.kv:
                    context.kv[key] = block.attn.keys_values(context.media.to(hidden.dtype))  # once per generation
                k, v = (t.repeat_interleave(hidden.shape[0] // t.shape[0], dim=0) for t in context.kv[key])
                hidden = block(hidden, (k, v), context.mask(hidden.shape[0], hidden.shape[1]).to(hidden.device))
            if args:
                return (hidden, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden}

        return hook
