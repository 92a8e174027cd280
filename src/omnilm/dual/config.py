"""DualEncoderConfig (the model) and DualTrainConfig (one training run), validated on construction.

The model config names each tower by its source (hub id, local directory, `pkg:NAME`), like OmniConfig.
Which parts train is a *stage* setting in the training config, with the same `PartStage` (frozen | full,
learning rate, weight decay) the LLM trainer uses: LiT locks the image tower and trains the rest.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from omnilm.config import DTYPES, _coerce, _require
from omnilm.errors import ConfigError
from omnilm.training.config import PartStage

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
        _require(bool(self.source), f"{path}.source", "must name a vision model (hub id, directory or pkg:)")
        _require(self.image_size is None or self.image_size >= 14, f"{path}.image_size", "must be >= 14 or null")
        _require(self.pooling in VISION_POOLING, f"{path}.pooling", f"{self.pooling!r} is not one of {VISION_POOLING}")
        _require(self.dtype in DTYPES, f"{path}.dtype", f"{self.dtype!r} is not one of {DTYPES}")


@dataclass
class TextTowerConfig:
    source: str  # any transformers text encoder (AutoModel), e.g. pkg:minilm-l6 (all-MiniLM-L6-v2)
    pooling: str = "mean"  # sentence-transformers models are trained with mean pooling over tokens
    max_length: int = 64  # tokens per text; longer texts are truncated
    dtype: str = "float32"
    trust_remote_code: bool = False

    def validate(self, path: str = "text") -> None:
        _require(bool(self.source), f"{path}.source", "must name a text encoder (hub id, directory or pkg:)")
        _require(self.pooling in TEXT_POOLING, f"{path}.pooling", f"{self.pooling!r} is not one of {TEXT_POOLING}")
        _require(self.max_length >= 4, f"{path}.max_length", "must be >= 4")
        _require(self.dtype in DTYPES, f"{path}.dtype", f"{self.dtype!r} is not one of {DTYPES}")


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
        self.vision = _coerce(VisionTowerConfig, self.vision, "vision")
        self.text = _coerce(TextTowerConfig, self.text, "text")
        self.validate()

    def validate(self) -> None:
        _require(self.vision is not None, "vision", "a dual encoder needs a vision tower")
        _require(self.text is not None, "text", "a dual encoder needs a text tower")
        self.vision.validate()
        self.text.validate()
        _require(self.projection_dim >= 1, "projection_dim", "must be >= 1")
        _require(self.projection in PROJECTIONS, "projection", f"{self.projection!r} is not one of {PROJECTIONS}")
        _require(0 < self.init_temperature <= 1, "init_temperature", "must be in (0, 1]")
        _require(self.max_logit_scale >= 1 / self.init_temperature, "max_logit_scale", "must be >= 1/init_temperature")
        for part in self.trained_parts:
            _require(part in TOWERS, "trained_parts", f"unknown part {part!r}; choose from {TOWERS}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "dual_encoder", **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DualEncoderConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"dual encoder config must be a mapping, got {type(data).__name__}")
        data = {k: v for k, v in data.items() if k != "kind"}
        return _coerce(cls, data, "model")


@dataclass
class DualStage:
    """LiT (the default): image tower locked, text tower and heads trained. Full: every part trained."""

    vision: PartStage = field(default_factory=PartStage)
    text: PartStage = field(default_factory=lambda: PartStage(mode="full", lr=2e-5))
    heads: PartStage = field(default_factory=lambda: PartStage(mode="full"))  # projections + temperature

    def __post_init__(self) -> None:
        for name in ("vision", "text", "heads"):
            setattr(self, name, _coerce(PartStage, getattr(self, name), f"stage.{name}"))
            getattr(self, name).validate(f"stage.{name}", ("frozen", "full"))
        _require(self.heads.mode == "full", "stage.heads.mode", "the projection heads are always trained")


@dataclass
class DualTrainConfig:
    model: DualEncoderConfig | None = None  # a fresh dual encoder from its towers …
    checkpoint: str | None = None  # … or a dual-encoder checkpoint to continue from
    train: str = "easy-vqa:train"  # JSONL of {"image", "caption"} records, or easy-vqa:train / easy-vqa:test
    eval: str | None = "easy-vqa:test"  # evaluated at the end (Recall@K, zero-shot) when set
    output_dir: str = "runs/dual"
    stage: DualStage = field(default_factory=DualStage)
    lr: float = 1e-3  # default learning rate of every trained part
    weight_decay: float = 0.0  # AdamW decay on matrices (never on biases, norms, the temperature)
    batch_size: int = 256  # CLIP needs big batches: every other pair in the batch is a negative
    epochs: float = 10.0
    max_steps: int | None = None  # overrides epochs
    warmup_ratio: float = 0.05  # linear warmup, then cosine decay to zero
    max_minutes: float | None = None  # stop (and save) after this much wall time, image features included
    save_every: int = 200  # steps between resumable checkpoints
    seed: int = 0
    feature_cache: bool = True  # encode images once with a frozen vision tower (cached on disk)
    feature_cache_dir: str | None = None  # None: $OMNILM_CACHE/dual-features
    log_every: int = 20
    num_threads: int | None = None  # torch CPU threads; None: torch's default (1 is faster on a busy machine)

    def __post_init__(self) -> None:
        self.model = _coerce(DualEncoderConfig, self.model, "model")
        self.stage = _coerce(DualStage, self.stage, "stage")
        _require((self.model is None) != (self.checkpoint is None), "model", "set exactly one of model, checkpoint")
        _require(bool(self.train), "train", "name a caption JSONL file or easy-vqa:train")
        for name in ("lr", "batch_size", "epochs", "save_every", "log_every"):
            _require(getattr(self, name) > 0, name, "must be > 0")
        _require(self.batch_size >= 2, "batch_size", "contrastive training needs >= 2 pairs per batch")
        _require(self.max_steps is None or self.max_steps > 0, "max_steps", "must be > 0")
        _require(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        _require(self.max_minutes is None or self.max_minutes > 0, "max_minutes", "must be > 0")
        _require(self.num_threads is None or self.num_threads >= 1, "num_threads", "must be >= 1")

    @classmethod
    def from_file(cls, path: str | Path, overrides: list[str] | None = None) -> DualTrainConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"training config {path} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        for item in overrides or []:
            apply_override(data, item)
        return _coerce(cls, data, "config")


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply `a.b.c=value` (value parsed as YAML) to the nested mapping `data`."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    *parents, leaf = key.split(".")
    node = data
    for name in parents:
        node = node.setdefault(name, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {item!r}: {name} is not a section")
    node[leaf] = yaml.safe_load(raw)
