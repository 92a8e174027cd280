"""Feature cache for frozen encoders: each media item is encoded once, stored on disk, reused.

Stage-1 alignment trains only connectors, so the vision / audio encoders give the same output for an
item every epoch and every run. The cache keys each item by its bytes and each encoder by a hash of
its weights plus every preprocessing setting that changes its output (image size, normalisation,
feature layer, pooling, frame count, mel settings). Entries are safetensors files written atomically,
so concurrent processes may fill the same cache.

Layout: `ROOT/<encoder identity>/<item hash[:2]>/<item hash>.safetensors` holding one tensor `features`:
image (T, C) · video per-frame (F, T, C) · audio clip (T_i, kC) · a dual encoder's pooled image (C_v,)
(training/contrastive.py uses the store directly: its tower runs once per image before training).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from omnilm.io import atomic_path
from omnilm.paths import cache_dir

logger = logging.getLogger(__name__)

_BATCH_INPUTS = {"image": "pixel_values", "video": "video_pixel_values", "audio": "audio_features"}
_BATCH_OUTPUTS = {"image": "image_features", "video": "video_frame_features", "audio": "audio_embeds"}


def default_root() -> Path:
    return cache_dir("features")


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's parameter and buffer names, dtypes, shapes and bytes."""
    return state_digest(module.state_dict()).hexdigest()


def state_digest(state: dict[str, torch.Tensor], digest=None):
    """`digest` (a hashlib object; default a new sha256) updated with each tensor's name, dtype, shape and bytes."""
    digest = digest or hashlib.sha256()
    for name, tensor in sorted(state.items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest


def item_key(item: Any, memo: dict | None = None) -> str | None:
    """sha256 of a media item's bytes (files are hashed once per process); None when not hashable."""
    if isinstance(item, (bytes, bytearray)):
        return hashlib.sha256(item).hexdigest()
    if isinstance(item, str) and not item.startswith(("data:", "http://", "https://")):
        path, memo = Path(item), {} if memo is None else memo
        try:
            stat = path.stat()
        except OSError:
            return None
        token = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if token not in memo:
            memo[token] = hashlib.sha256(path.read_bytes()).hexdigest()
        return memo[token]
    return None


class FeatureStore:
    """Encoder outputs on disk, one safetensors file per (encoder identity, item key), written atomically."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, identity: str, key: str) -> Path:
        return self.root / identity / key[:2] / f"{key}.safetensors"

    def get(self, identity: str, key: str) -> torch.Tensor | None:
        path = self._path(identity, key)
        if not path.is_file():
            return None
        try:
            return load_file(str(path))["features"]
        except Exception as err:  # a damaged entry is recomputed, not fatal
            logger.warning("feature cache entry %s is unreadable (%s); recomputing it", path, err)
            return None

    def put(self, identity: str, key: str, features: torch.Tensor) -> None:
        with atomic_path(self._path(identity, key)) as tmp:
            save_file({"features": features.contiguous()}, str(tmp))


class FeatureCache(FeatureStore):
    """Swap raw media in a batch for cached encoder outputs of the model's frozen encoders."""

    def __init__(self, root: str | Path, model, processor) -> None:
        super().__init__(root)
        self.identities = encoder_identities(model, processor)
        self.hits = 0
        self.misses = 0
        self._memo: dict = {}
        if self.identities:
            logger.info("feature cache %s for %s", self.root, ", ".join(sorted(self.identities)))

    def apply(self, model, batch: dict[str, Any]) -> dict[str, Any]:
        """Replace `pixel_values` / `video_pixel_values` / `audio_features` by cached features.

        `batch["media_items"]` (removed here) lists each modality's items in batch order; a modality
        with any item that cannot be keyed (an in-memory image) is left to the encoder.
        """
        items = batch.pop("media_items", None) or {}
        for modality, identity in self.identities.items():
            inputs = batch.get(_BATCH_INPUTS[modality])
            if inputs is None:
                continue
            keys = [item_key(item, self._memo) for item in items.get(modality, [])]
            if len(keys) != len(inputs) or not all(keys):
                continue
            features = [self.get(identity, key) for key in keys]
            missing = [i for i, f in enumerate(features) if f is None]
            if missing:
                computed = self._encode(model, modality, batch, missing)
                for i, feats in zip(missing, computed):
                    self.put(identity, keys[i], feats)
                    features[i] = feats
            self.hits += len(keys) - len(missing)
            self.misses += len(missing)
            device = inputs.device
            del batch[_BATCH_INPUTS[modality]]
            batch[_BATCH_OUTPUTS[modality]] = _stack(modality, [f.to(device) for f in features])
        return batch

    @torch.no_grad()
    def _encode(self, model, modality: str, batch: dict[str, Any], rows: list[int]) -> list[torch.Tensor]:
        """Encoder outputs of the items at `rows`, one tensor per item (on the CPU)."""
        if modality == "audio":
            dtype = next(model.audio.parameters()).dtype
            clips = model.audio.encode_clips(batch["audio_features"][rows].to(dtype), batch["audio_tokens"][rows])
            return [clip.cpu() for clip in clips]
        dtype = next(model.vision.parameters()).dtype
        if modality == "image":
            return list(model.vision(batch["pixel_values"][rows].to(dtype)).cpu())  # N × (T, C)
        return [model.vision(batch["video_pixel_values"][i].to(dtype)).cpu() for i in rows]  # N × (F, T, C)


def _stack(modality: str, features: list[torch.Tensor]) -> torch.Tensor:
    if modality != "audio":
        return torch.stack(features)  # (N, T, C) or (N, F, T, C)
    return torch.nn.utils.rnn.pad_sequence(features, batch_first=True)  # (N, T_max, kC), zero-padded clips


def encoder_identities(model, processor) -> dict[str, str]:
    """modality → identity hash, for each modality whose encoder is present and fully frozen."""
    layout = processor.layout
    config = model.config
    found = {}

    def frozen(module) -> bool:
        return module is not None and not any(p.requires_grad for p in module.parameters())

    if frozen(model.vision):
        vision = {
            "weights": weights_digest(model.vision),
            "encoder": {k: getattr(config.vision, k) for k in ("feature_layer", "drop_cls", "pooling", "pool_size")},
            "image": [layout.image_size, list(layout.image_mean), list(layout.image_std)],
        }
        if "image" in config.modalities:
            found["image"] = _hash({"modality": "image", **vision})
        if "video" in config.modalities:
            found["video"] = _hash({"modality": "video", "frames": layout.video_frames, **vision})
    if frozen(model.audio):
        extractor = processor.audio_feature_extractor
        found["audio"] = _hash({
            "modality": "audio",
            "weights": weights_digest(model.audio),
            "stack": layout.audio_stack,
            "mel": json.loads(extractor.to_json_string()) if extractor is not None else None,
        })
    return found


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:24]
