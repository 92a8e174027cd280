"""DualProcessor: images → pixel_values and texts → token ids for a dual encoder (the model owns neither).

Images take omnilm's one pixel path (`omnilm.pixels`: the vision source's size, mean and std, resize,
centre crop), as the multimodal processor's do; texts are tokenised with the text source's tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from omnilm.dual.config import DualEncoderConfig
from omnilm.encoders.vision import vision_tower_config
from omnilm.media import load_image
from omnilm.pixels import image_preprocessing, to_pixels
from omnilm.sources import resolve_source

PREPROCESSOR_FILE = "dual_preprocessor.json"


class DualProcessor:
    def __init__(self, tokenizer, *, image_size: int, image_mean, image_std, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.mean, self.std = tuple(image_mean), tuple(image_std)
        self.max_length = max_length

    @classmethod
    def from_config(cls, config: DualEncoderConfig, base_dir: str | Path | None = None) -> DualProcessor:
        """Tokenizer of the text source; image size, mean and std of the vision source (unless overridden)."""
        from transformers import AutoConfig, AutoTokenizer

        text_source = resolve_source(config.text.source, base_dir)
        vision_source = resolve_source(config.vision.source, base_dir)
        tokenizer = AutoTokenizer.from_pretrained(text_source, trust_remote_code=config.text.trust_remote_code)
        tower = vision_tower_config(AutoConfig.from_pretrained(vision_source, trust_remote_code=config.vision.trust_remote_code))
        size, mean, std = image_preprocessing(vision_source, getattr(tower, "image_size", 224))
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
        settings = {"image_size": self.image_size, "image_mean": list(self.mean), "image_std": list(self.std),
                    "max_length": self.max_length}
        (directory / PREPROCESSOR_FILE).write_text(json.dumps(settings, indent=2))

    def images(self, items: list[Any]) -> torch.Tensor:
        """Paths, bytes, data URLs, PIL images → pixel_values (N, 3, S, S). Raises MediaError on a bad item."""
        return torch.stack([self.image(item) for item in items])

    def image(self, item: Any) -> torch.Tensor:
        return to_pixels(load_image(item), side=self.image_size, mean=self.mean, std=self.std)  # (3, S, S)

    def texts(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Texts → input_ids and attention_mask, each (N, L), padded to the longest."""
        if isinstance(texts, str):
            texts = [texts]
        encoded = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
