"""DualProcessor: images → pixel_values and texts → token ids for a dual encoder (the model owns neither).

Images are resized (shortest edge), centre-cropped to `image_size` and normalised with the vision
source's mean and std; texts are tokenised with the text source's tokenizer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from omnilm.dual.config import DualEncoderConfig
from omnilm.media import load_image
from omnilm.sources import resolve_source

logger = logging.getLogger(__name__)

PREPROCESSOR_FILE = "dual_preprocessor.json"
_CLIP_MEAN, _CLIP_STD = (0.4815, 0.4578, 0.4082), (0.2686, 0.2613, 0.2758)


class DualProcessor:
    def __init__(self, tokenizer, *, image_size: int, image_mean, image_std, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.mean = torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1)
        self.max_length = max_length

    @classmethod
    def from_config(cls, config: DualEncoderConfig, base_dir: str | Path | None = None) -> DualProcessor:
        """Tokenizer of the text source; image size, mean and std of the vision source (unless overridden)."""
        from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

        text_source = resolve_source(config.text.source, base_dir)
        vision_source = resolve_source(config.vision.source, base_dir)
        tokenizer = AutoTokenizer.from_pretrained(text_source, trust_remote_code=config.text.trust_remote_code)
        mean, std, size = _CLIP_MEAN, _CLIP_STD, None
        try:
            image_processor = AutoImageProcessor.from_pretrained(vision_source)
            mean, std = image_processor.image_mean, image_processor.image_std
            crop = getattr(image_processor, "crop_size", None) or getattr(image_processor, "size", None) or {}
            size = crop.get("height") or crop.get("shortest_edge")
        except (OSError, ValueError) as err:
            logger.warning("no image processor in %s (%s); using CLIP's mean and std", config.vision.source, err)
        if size is None:
            vision_config = AutoConfig.from_pretrained(vision_source)
            size = getattr(getattr(vision_config, "vision_config", vision_config), "image_size", 224)
        return cls(tokenizer, image_size=config.vision.image_size or size, image_mean=mean, image_std=std,
                   max_length=config.text.max_length)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> DualProcessor:
        from transformers import AutoTokenizer

        directory = Path(directory)
        settings = json.loads((directory / PREPROCESSOR_FILE).read_text())
        return cls(AutoTokenizer.from_pretrained(directory), **settings)

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.tokenizer.save_pretrained(directory)
        settings = {"image_size": self.image_size, "image_mean": self.mean.flatten().tolist(),
                    "image_std": self.std.flatten().tolist(), "max_length": self.max_length}
        (directory / PREPROCESSOR_FILE).write_text(json.dumps(settings, indent=2))

    def images(self, items: list[Any]) -> torch.Tensor:
        """Paths, bytes, data URLs, PIL images → pixel_values (N, 3, S, S). Raises MediaError on a bad item."""
        return torch.stack([self.image(item) for item in items])

    def image(self, item: Any) -> torch.Tensor:
        image = load_image(item)
        s = self.image_size
        w, h = image.size
        scale = s / min(w, h)
        resized = image.resize((max(s, round(w * scale)), max(s, round(h * scale))), Image.BICUBIC)
        left, top = (resized.width - s) // 2, (resized.height - s) // 2
        crop = resized.crop((left, top, left + s, top + s))
        pixels = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255.0).permute(2, 0, 1)  # (3, S, S)
        return (pixels - self.mean) / self.std

    def texts(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Texts → input_ids and attention_mask, each (N, L), padded to the longest."""
        if isinstance(texts, str):
            texts = [texts]
        encoded = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
