"""Media encoded once: encoder + connector outputs kept by a hash of each item's preprocessed input.

A chat client sends the whole conversation on every turn, images included; with `lm.model.media_cache` set,
`OmniModel.encode_media` looks each item up by the BLAKE2 hash of its pixels (frames, audio features and
token count) and encodes only the items it has not seen. Least recently used entries leave first once the
features held pass `max_bytes`. It serves inference only: with gradients enabled (training) it is bypassed,
and it empties itself when the encoders' or connectors' weights change (their tensors' version counters).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable

import torch

ITEM_INPUTS = {"image": ("pixel_values",), "video": ("video_pixel_values",),
               "audio": ("audio_features", "audio_tokens")}  # the batched inputs of one item, per modality
PRECOMPUTED = ("image_features", "audio_embeds", "video_frame_features")


class MediaCache:
    """A bounded, thread-safe map from an item's content hash to its (T, D) LLM-width features."""

    def __init__(self, *, max_bytes: int = 256 * 2**20) -> None:
        self.max_bytes, self.held_bytes = max_bytes, 0
        self._entries: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        self._stamp: tuple = ()  # the weights the entries were computed with

    @property
    def hit_rate(self) -> float:
        looked = self.hits + self.misses
        return self.hits / looked if looked else 0.0

    def encode(self, encode: Callable[..., dict[str, list[torch.Tensor]]], media: dict, *,
               weights: list[torch.Tensor]) -> dict[str, list]:
        """`encode(**media)`'s result, encoding only the items not cached (computed with these `weights`)."""
        if any(media.get(name) is not None for name in PRECOMPUTED):
            return encode(**media)
        stamp = tuple((w.data_ptr(), w._version) for w in weights)
        with self._lock:
            if stamp != self._stamp:  # trained or reloaded since: every entry is stale
                self._entries.clear()
                self.held_bytes, self._stamp = 0, stamp
        out = {}
        for modality, names in ITEM_INPUTS.items():
            tensors = [media.get(name) for name in names]
            if tensors[0] is None:
                continue
            keys = [_key(modality, [t[i] for t in tensors]) for i in range(tensors[0].shape[0])]
            found = [self._get(key) for key in keys]
            missing = [i for i, feats in enumerate(found) if feats is None]
            if missing:
                rows = torch.tensor(missing, device=tensors[0].device)
                fresh = encode(**{name: t[rows] for name, t in zip(names, tensors, strict=True)})[modality]
                for i, feats in zip(missing, fresh, strict=True):
                    found[i] = feats
                    self._put(keys[i], feats)
            out[modality] = found
        return out

    def _get(self, key: bytes) -> torch.Tensor | None:
        with self._lock:
            feats = self._entries.get(key)
            if feats is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return feats

    def _put(self, key: bytes, feats: torch.Tensor) -> None:
        size = feats.numel() * feats.element_size()
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = feats.detach()
            self.held_bytes += size
            while self.held_bytes > self.max_bytes:
                _, old = self._entries.popitem(last=False)
                self.held_bytes -= old.numel() * old.element_size()


def _key(modality: str, parts: list[torch.Tensor]) -> bytes:
    digest = hashlib.blake2b(modality.encode(), digest_size=20)
    for part in parts:
        part = part.detach().contiguous().cpu()
        digest.update(f"{tuple(part.shape)}{part.dtype}".encode())
        digest.update(part.reshape(-1).view(torch.uint8).numpy().tobytes() if part.numel() else b"")
    return digest.digest()
