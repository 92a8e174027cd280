"""DualEncoder: a DualEncoderModel with its processor — build, save, load, embed images and texts.

A checkpoint is a directory like every omnilm model: `omnilm.json` (the DualEncoderConfig with
`"kind": "dual_encoder"`, each tower named by its source), `model.safetensors` (projection heads,
temperature and any tower trained in full), the tokenizer files and `dual_preprocessor.json`.
`save(dir, full=True)` also writes both towers (sources become `./vision`, `./text`) so it stands alone.
`omnilm.load` reads the kind and returns a DualEncoder for such a checkpoint.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omnilm.checkpoint import CONFIG_FILE, checkpoint_kind, is_checkpoint, load_weights, write_checkpoint
from omnilm.data.feature_cache import state_digest
from omnilm.dual.config import KIND, DualEncoderConfig
from omnilm.dual.model import DualEncoderModel
from omnilm.dual.processor import DualProcessor
from omnilm.errors import OmniError

logger = logging.getLogger(__name__)


class DualEncoder:
    """`model` (DualEncoderModel, an nn.Module) + `processor`; `name` is the reference it was loaded from."""

    def __init__(self, model: DualEncoderModel, processor: DualProcessor, name: str = "dual") -> None:
        self.model = model.eval()
        self.processor = processor
        self.name = name
        self._identity: str | None = None

    @property
    def config(self) -> DualEncoderConfig:
        return self.model.config

    @property
    def dim(self) -> int:
        return self.config.projection_dim

    @classmethod
    def from_config(cls, config: DualEncoderConfig, *, base_dir: str | Path | None = None, seed: int = 0,
                    name: str = "dual") -> DualEncoder:
        torch.manual_seed(seed)  # fresh projection heads are drawn from this seed
        return cls(DualEncoderModel.from_config(config, base_dir=base_dir),
                   DualProcessor.from_config(config, base_dir=base_dir), name)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> DualEncoder:
        """Load a dual-encoder checkpoint directory: towers from their sources, then the stored heads and
        trained towers on top."""
        directory = Path(directory)
        if not is_checkpoint(directory):
            raise OmniError(f"{directory} is not an omnilm checkpoint ({CONFIG_FILE} is missing); train a dual encoder "
                            "with `omnilm train configs/dual-easy-vqa.yaml` or pass its output directory")
        if checkpoint_kind(directory) != KIND:
            raise OmniError(f"{directory} is an omnilm model but not a dual encoder (image search and embeddings "
                            "need one, e.g. trained with `omnilm train configs/dual-easy-vqa.yaml`)")
        config = DualEncoderConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
        model = DualEncoderModel.from_config(config, base_dir=directory)
        load_weights(model, directory, set(model.trained_state_dict()))
        return cls(model, DualProcessor.from_pretrained(directory), name=directory.name)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> DualEncoder:
        self.model.to(device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def identity(self) -> str:
        """sha256 of the config and the stored weights: an index records it and refuses other models."""
        if self._identity is None:
            digest = hashlib.sha256(json.dumps(self.config.to_dict(), sort_keys=True).encode())
            flat = {k: v.reshape(-1) for k, v in self.model.trained_state_dict().items()}  # shapes as indexes hold them
            self._identity = state_digest(flat, digest).hexdigest()
        return self._identity

    def forget_identity(self) -> None:
        """Call after changing weights (training) so `identity` is recomputed."""
        self._identity = None

    # Embedding ------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def embed_images(self, items: list[Any], batch_size: int = 32) -> np.ndarray:
        """Images (paths, bytes, data URLs, PIL) → unit vectors (N, D) float32. Raises MediaError on a bad item."""
        chunks = [self.model.encode_images(self.processor.images(items[i : i + batch_size]).to(self.device))
                  for i in range(0, len(items), batch_size)]
        return _stack(chunks, self.dim)

    @torch.inference_mode()
    def embed_texts(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
        """Texts → unit vectors (M, D) float32."""
        if isinstance(texts, str):
            texts = [texts]
        chunks = [self.model.encode_texts(**_to(self.processor.texts(texts[i : i + batch_size]), self.device))
                  for i in range(0, len(texts), batch_size)]
        return _stack(chunks, self.dim)

    # Checkpoints ----------------------------------------------------------------------------------------
    def save(self, directory: str | Path, *, full: bool = False) -> Path:
        """Write a checkpoint atomically (an interrupted save leaves the previous one intact)."""
        config = copy.deepcopy(self.config)
        state = self.model.trained_state_dict()

        def towers(staging: Path) -> dict:
            self.model.vision_tower.save_pretrained(staging / "vision")
            self.model.text_tower.save_pretrained(staging / "text")
            config.vision.source, config.text.source = "./vision", "./text"
            config.trained_parts = []
            return {k: v for k, v in state.items() if not k.startswith(("vision_tower.", "text_tower."))}

        return write_checkpoint(directory, config, state, self.processor, towers if full else None, kind=KIND)


def embed_request(model: DualEncoder, inputs: str | Iterable[Any]) -> list[list[float]]:
    """Embeddings for an OpenAI-style `input`: one string or a list; each item a text, an image data URL
    (`data:image/...`), or a mapping `{"text": ...}` / `{"image": ...}` / `{"image_url": {"url": ...}}`.

    Texts and images share one space, so the result mixes freely; order is kept. Bad images raise MediaError.
    """
    items = [inputs] if isinstance(inputs, (str, dict)) else list(inputs)
    if not items:
        raise OmniError("input is empty: give a text, an image data URL, or a list of them")
    classified = [_classify(item, index) for index, item in enumerate(items)]  # (kind, value) of each item
    out: list[list[float] | None] = [None] * len(items)
    for kind, embed in (("text", model.embed_texts), ("image", model.embed_images)):
        positions = [i for i, (k, _) in enumerate(classified) if k == kind]
        if positions:
            for i, vector in zip(positions, embed([classified[i][1] for i in positions])):
                out[i] = vector.tolist()
    return out


def _classify(item: Any, index: int) -> tuple[str, Any]:
    if isinstance(item, str):
        return ("image", item) if item.startswith("data:image/") else ("text", item)
    if isinstance(item, dict):
        if isinstance(item.get("text"), str):
            return "text", item["text"]
        image = item.get("image") or (item.get("image_url") or {}).get("url")
        if isinstance(image, str) and image.startswith("data:"):
            return "image", image
    raise OmniError(f"input[{index}]: expected a text, an image data URL, or {{'text'|'image': ...}}; "
                    f"got {type(item).__name__}")


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _stack(chunks: list[torch.Tensor], dim: int) -> np.ndarray:
    if not chunks:
        return np.zeros((0, dim), dtype=np.float32)
    return torch.cat(chunks).float().cpu().numpy()
