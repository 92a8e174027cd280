"""The one image → pixel_values path: the encoder's size and statistics, resize, centre-crop, normalise.

Both the multimodal processor (images and video frames) and the dual-encoder processor use it, so a vision
tower sees the same pixels whichever model it serves. Deliberately simpler than transformers' image
processors: one square side S (the crop size when the source crops, else its size), bicubic resize of the
short side to S, centre crop, [0, 1] scaling and the source's mean/std; no rescale quirks per family.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # the fallback when a source ships no image processor
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def image_preprocessing(source: str, default_size: int) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """(side, mean, std) from the image processor of `source`, else (`default_size`, CLIP's mean and std)."""
    import transformers

    try:
        proc = transformers.AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError, KeyError):
        return default_size, CLIP_MEAN, CLIP_STD
    size = getattr(proc, "crop_size", None) if getattr(proc, "do_center_crop", False) else getattr(proc, "size", None)
    side = _side(size) or default_size
    mean = tuple(getattr(proc, "image_mean", None) or CLIP_MEAN)
    std = tuple(getattr(proc, "image_std", None) or CLIP_STD)
    return side, mean, std


def to_pixels(image: Image.Image, *, side: int, mean, std) -> torch.Tensor:
    """An RGB image → pixel_values (3, S, S): short side resized to S (bicubic), centre crop, normalised."""
    w, h = image.size
    scale = side / min(w, h)
    resized = image.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.Resampling.BICUBIC)
    left, top = (resized.width - side) // 2, (resized.height - side) // 2
    array = np.asarray(resized.crop((left, top, left + side, top + side)), dtype=np.float32) / 255.0  # (S, S, 3)
    array = (array - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (3, S, S)


def _side(size: Any) -> int | None:
    if size is None:
        return None
    if isinstance(size, int):
        return size
    get = size.get if hasattr(size, "get") else (lambda k: getattr(size, k, None))
    return get("height") or get("shortest_edge") or get("width")
