"""A conversation as llama.cpp input: runs of token ids and runs of media embeddings, with a cache key per position.

The processor tokenizes (the PyTorch path's ids, exactly) and the media parts encode; each placeholder run is
replaced by its item's features. Keys let a later turn find how much of a cached sequence it shares: a text
position's key is its token id, a media position's the digest of its item's features and its offset.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from omnilm.errors import PlaceholderMismatchError
from omnilm.model import MEDIA_INPUTS


@dataclass
class Prompt:
    segments: list[tuple[int, list[int] | np.ndarray]]  # (start position, token ids | embeddings (T, D))
    keys: list  # one per position

    def __len__(self) -> int:
        return len(self.keys)

    def tail(self, start: int) -> list[tuple[int, list[int] | np.ndarray]]:
        """The segments from position `start` on (the part not in the KV cache yet)."""
        out = []
        for pos, seg in self.segments:
            end = pos + len(seg)
            if end > start:
                cut = max(0, start - pos)
                out.append((pos + cut, seg[cut:]))
        return out


def build_prompts(processor, media_model, conversations: list) -> list[Prompt]:
    """Tokenize `conversations` (generation prompt added) and encode their media, as one batch, into Prompts."""
    inputs = processor(conversations, add_generation_prompt=True, padding_side="left")
    media = {k: inputs[k].to(media_model.device) for k in MEDIA_INPUTS if k in inputs}
    with torch.no_grad():
        items = media_model.encode_media(**media) if media else {}
    by_id = {token_id: modality for modality, token_id in media_model.placeholder_ids.items()}
    # the batch's items in order of appearance, row after row: each row takes its own from the front
    queues = {m: [feats.float().cpu().numpy() for feats in items.get(m, [])] for m in by_id.values()}  # N × (T, D)
    rows = [ids[mask.bool()].tolist() for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"], strict=True)]
    prompts = [_prompt(ids, by_id, queues) for ids in rows]
    left = {m: len(q) for m, q in queues.items() if q}
    if left:
        raise PlaceholderMismatchError(f"media without placeholders: {left}; build inputs with OmniProcessor")
    return prompts


def _prompt(ids: list[int], by_id: dict[int, str], queues: dict[str, list[np.ndarray]]) -> Prompt:
    segments: list[tuple[int, list[int] | np.ndarray]] = []
    keys: list = []
    pos = 0
    while pos < len(ids):
        modality = by_id.get(ids[pos])
        if modality is None:
            end = pos
            while end < len(ids) and ids[end] not in by_id:
                end += 1
            segments.append((pos, ids[pos:end]))
            keys.extend(ids[pos:end])
            pos = end
            continue
        if not queues[modality]:
            raise PlaceholderMismatchError(f"{modality}: the prompt has more placeholder tokens than its media gave "
                                           "features; build inputs with OmniProcessor")
        feats = queues[modality].pop(0)  # (T, D): this item fills the next T placeholder positions
        run = feats.shape[0]
        if ids[pos:pos + run] != [ids[pos]] * run:
            raise PlaceholderMismatchError(f"{modality}: an item gave {run} features but its placeholder run is "
                                           "shorter; build inputs with OmniProcessor")
        digest = hashlib.blake2b(feats.tobytes(), digest_size=12).hexdigest()
        segments.append((pos, feats))
        keys.extend((digest, j) for j in range(run))
        pos += run
    return Prompt(segments, keys)


def shared_prefix(a: list, b: list) -> int:
    """How many leading keys `a` and `b` share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
