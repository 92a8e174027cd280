"""DualEncoderConfig: a dual encoder's towers and heads, validated on construction.

The model config names each tower by its source (hub id, local directory, `pkg:NAME`), like OmniConfig.
Which parts train is a *stage* setting of `omnilm train` (TrainConfig: `stage.vision`, `stage.text`,
`stage.connectors` = the projection heads and temperature): LiT locks the image tower and trains the rest.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from omnilm.config import DTYPES
from omnilm.configkit import check_fields, coerce, require

KIND = "dual_encoder"  # the `kind` in omnilm.json (and in a training config's model.config) of a dual encoder
VISION_POOLING = ("cls", "mean", "cls_mean")
TEXT_POOLING = ("mean", "cls")
PROJECTIONS = ("linear", "mlp")
TOWERS = ("vision", "text")


@dataclass
class VisionTowerConfig:
    source: str  # any transformers vision model: DINOv2, ViT, a CLIP/SigLIP vision tower
    image_size: int | None = None  # None: the source's own size; ViTs interpolate position embeddings
    pooling: str = "cls_mean"  # cls | mean of patch tokens | both concatenated (DINOv2's linear-probe recipe)
    dtype: str = "float32"
    trust_remote_code: bool = False  # off unless asked: remote code runs on load

    def validate(self, path: str = "vision") -> None:
        require(bool(self.source), f"{path}.source", "must name a vision model (hub id, directory or pkg:)")
        require(self.image_size is None or self.image_size >= 14, f"{path}.image_size", "must be >= 14 or null")
        require(self.pooling in VISION_POOLING, f"{path}.pooling", f"{self.pooling!r} is not one of {VISION_POOLING}")
        require(self.dtype in DTYPES, f"{path}.dtype", f"{self.dtype!r} is not one of {DTYPES}")


@dataclass
class TextTowerConfig:
    source: str  # any transformers text encoder (AutoModel), e.g. pkg:minilm-l6 (all-MiniLM-L6-v2)
    pooling: str = "mean"  # sentence-transformers models are trained with mean pooling over tokens
    max_length: int = 64  # tokens per text; longer texts are truncated
    dtype: str = "float32"
    trust_remote_code: bool = False

    def validate(self, path: str = "text") -> None:
        require(bool(self.source), f"{path}.source", "must name a text encoder (hub id, directory or pkg:)")
        require(self.pooling in TEXT_POOLING, f"{path}.pooling", f"{self.pooling!r} is not one of {TEXT_POOLING}")
        require(self.max_length >= 4, f"{path}.max_length", "must be >= 4")
        require(self.dtype in DTYPES, f"{path}.dtype", f"{self.dtype!r} is not one of {DTYPES}")


@dataclass
class DualEncoderConfig:
    vision: VisionTowerConfig
    text: TextTowerConfig
    projection_dim: int = 256  # width of the shared embedding space
    projection: str = "linear"  # linear (CLIP) | mlp (Linear-GELU-Linear: more capacity over a locked tower)
    init_temperature: float = 0.07  # CLIP's initial softmax temperature; learned as log(1/T)
    max_logit_scale: float = 100.0  # CLIP clamps 1/T at 100 to keep training stable
    trained_parts: list[str] = field(default_factory=list)  # towers whose weights a checkpoint stores

    def __post_init__(self) -> None:
        check_fields(self)
        self.validate()

    def validate(self) -> None:
        require(self.vision is not None, "vision", "a dual encoder needs a vision tower")
        require(self.text is not None, "text", "a dual encoder needs a text tower")
        self.vision.validate()
        self.text.validate()
        require(self.projection_dim >= 1, "projection_dim", "must be >= 1")
        require(self.projection in PROJECTIONS, "projection", f"{self.projection!r} is not one of {PROJECTIONS}")
        require(0 < self.init_temperature <= 1, "init_temperature", "must be in (0, 1]")
        require(self.max_logit_scale >= 1 / self.init_temperature, "max_logit_scale", "must be >= 1/init_temperature")
        for part in self.trained_parts:
            require(part in TOWERS, "trained_parts", f"unknown part {part!r}; choose from {TOWERS}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DualEncoderConfig:
        """The config from its mapping (`kind` dropped); ConfigError naming the field when it does not fit."""
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k != "kind"}
        return coerce(cls, data, "model")

