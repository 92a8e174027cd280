"""OmniConfig: nested dataclasses that describe a model, validated on construction.

Each part names its *source*: a Hugging Face hub id, a local directory or a packaged reference
(`pkg:NAME`). Derived values (widths, token counts) are computed from the parts, never stored.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from omnilm.configkit import check_fields, coerce, read_mapping, require

logger = logging.getLogger(__name__)

MODALITIES = ("image", "audio", "video")
DTYPES = ("auto", "float32", "bfloat16", "float16")  # auto: bfloat16 where this machine computes it natively
VISION_POOLING = ("none", "avg", "pixel_shuffle")
AUDIO_MODES = ("embed", "transcribe")
FUSION_MODES = ("embed", "gated_xattn")


@functools.cache
def native_bfloat16() -> bool:
    """Whether this machine multiplies bfloat16 natively: a CUDA GPU that supports it, or a CPU with AVX512-BF16
    or AMX (oneDNN's bf16 kernels). Elsewhere PyTorch emulates it, ~30x slower than float32 (AVX2-only CPUs)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def torch_dtype(name: str):
    """The torch dtype of a config's `dtype` name (one of DTYPES); ``auto`` is bfloat16 where this machine computes
    it natively, else float32. Asking for bfloat16 where it is emulated works, with a warning."""
    import torch  # local import: configs are read without torch

    if name == "auto":
        return torch.bfloat16 if native_bfloat16() else torch.float32
    if name == "bfloat16" and not native_bfloat16():
        _warn_emulated_bfloat16()
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def dtype_name(dtype) -> str:
    """A torch dtype's name in DTYPES (the inverse of torch_dtype for a resolved dtype)."""
    return str(dtype).removeprefix("torch.")


@functools.cache
def _warn_emulated_bfloat16() -> None:
    logger.warning("dtype bfloat16: this machine has no native bfloat16 (no AVX512-BF16 or AMX on the CPU), so its "
                   "matrix products are emulated, ~30x slower than float32; set dtype: auto or float32")


@dataclass
class LLMConfig:
    source: str  # hub id, local dir or pkg:NAME of any AutoModelForCausalLM
    dtype: str = "float32"  # weights dtype; bfloat16 halves memory on GPUs
    trust_remote_code: bool = False  # off unless the user asks: remote code runs on load
    max_length: int | None = None  # context limit; None: the LLM config's max_position_embeddings
    system_prompt: str | None = None  # system message for conversations without one; None: the template's default

    def validate(self, path: str = "llm") -> None:
        require(bool(self.source), f"{path}.source", "must name a hub id, local directory or pkg: reference")
        require(self.dtype in DTYPES, f"{path}.dtype", f"{self.dtype!r} is not one of {DTYPES}")
        require(self.max_length is None or self.max_length > 0, f"{path}.max_length", "must be positive")


@dataclass
class VisionConfig:
    source: str  # any transformers vision model (CLIP/SigLIP tower, DINOv2, ViT)
    feature_layer: int = -1  # hidden state to use; LLaVA takes -2 of CLIP (the last layer is tuned for the contrastive head)
    drop_cls: bool = True  # CLS (and register) tokens summarise the image; patch tokens keep the layout
    pooling: str = "none"  # none | avg (k×k average) | pixel_shuffle (k×k patches → one token, channels ×k²)
    pool_size: int = 2  # k: both pooling modes cut the token count by k²
    image_size: int | None = None  # None: the encoder's own preprocessing size
    dtype: str = "float32"
    trust_remote_code: bool = False

    def validate(self, path: str = "vision") -> None:
        require(bool(self.source), f"{path}.source", "must name a vision model")
        require(self.pooling in VISION_POOLING, f"{path}.pooling", f"{self.pooling!r} is not one of {VISION_POOLING}")
        require(self.pool_size >= 1, f"{path}.pool_size", "must be >= 1")
        require(self.image_size is None or self.image_size > 0, f"{path}.image_size", "must be positive")
        require(self.dtype in DTYPES, f"{path}.dtype", f"{self.dtype!r} is not one of {DTYPES}")


@dataclass
class AudioConfig:
    source: str  # a Whisper checkpoint (its encoder, and its decoder for mode=transcribe)
    mode: str = "embed"  # embed: encoder features go to the LLM · transcribe: Whisper ASR text goes to the LLM
    stack_factor: int = 4  # stack k encoder frames into one token (50 Hz → 12.5 Hz for k=4)
    max_seconds: float = 30.0  # Whisper's window; longer clips are refused
    dtype: str = "float32"
    transcribe_prompt: str | None = None  # transcribe mode: text that primes Whisper's vocabulary (domain words)
    transcribe_beams: int = 1  # transcribe mode: beam width of Whisper's decoding (1: greedy)

    def validate(self, path: str = "audio") -> None:
        require(bool(self.source), f"{path}.source", "must name a Whisper model")
        require(self.mode in AUDIO_MODES, f"{path}.mode", f"{self.mode!r} is not one of {AUDIO_MODES}")
        require(self.stack_factor >= 1, f"{path}.stack_factor", "must be >= 1")
        require(0 < self.max_seconds <= 30.0, f"{path}.max_seconds", "must be in (0, 30]: one Whisper window")
        require(self.dtype in DTYPES, f"{path}.dtype", f"{self.dtype!r} is not one of {DTYPES}")
        require(self.transcribe_beams >= 1, f"{path}.transcribe_beams", "must be >= 1")


@dataclass
class VideoConfig:
    num_frames: int = 8  # frames sampled uniformly over the clip
    temporal_pool: int = 2  # average this many consecutive frames into one: fewer tokens, motion blurred
    frame_order: bool = True  # a learned embedding marks each pooled frame's place in time (false: an ablation)
    frame_delta: bool = False  # add a learned projection of each slot's change from the previous one (counting)
    max_frames_decoded: int = 10_000  # refuse pathological files before decoding them all

    def validate(self, path: str = "video") -> None:
        require(self.num_frames >= 1, f"{path}.num_frames", "must be >= 1")
        require(self.temporal_pool >= 1, f"{path}.temporal_pool", "must be >= 1")
        require(
            self.num_frames % self.temporal_pool == 0,
            f"{path}.num_frames",
            f"must be a multiple of temporal_pool ({self.temporal_pool})",
        )


@dataclass
class ConnectorConfig:
    type: str = "mlp"  # a name in omnilm.connectors.CONNECTORS
    hidden_dim: int | None = None  # None: the LLM width
    options: dict[str, Any] = field(default_factory=dict)  # connector-specific keyword arguments

    def validate(self, path: str) -> None:
        from omnilm.connectors import CONNECTORS  # local import: connectors import torch

        require(
            self.type in CONNECTORS, f"{path}.type", f"unknown connector {self.type!r}; choose one of {sorted(CONNECTORS)}"
        )
        require(self.hidden_dim is None or self.hidden_dim > 0, f"{path}.hidden_dim", "must be positive")
        require(self.type != "swiglu" or not (self.hidden_dim or 0) % 2, f"{path}.hidden_dim",
                "must be even for swiglu: the SwiGLU halves it")
        from omnilm.connectors import connector_options

        valid = connector_options(self.type)
        unknown = sorted(set(self.options) - set(valid))
        require(not unknown, f"{path}.options", f"{self.type} takes no option(s) {unknown}; valid: {list(valid)}")


@dataclass
class FusionConfig:
    """How media reaches the LLM."""

    mode: str = "embed"  # embed: features replace placeholder tokens · gated_xattn: Flamingo cross-attention
    every: int = 1  # gated_xattn: a block before every k-th decoder layer (OpenFlamingo 3B/4B: 1/2, 9B: 4)
    heads: int = 8  # gated_xattn: attention heads; must divide the LLM width
    ff_mult: int = 4  # gated_xattn: feed-forward width = ff_mult × LLM width

    def validate(self, path: str = "fusion") -> None:
        require(self.mode in FUSION_MODES, f"{path}.mode", f"{self.mode!r} is not one of {FUSION_MODES}")
        for name in ("every", "heads", "ff_mult"):
            require(getattr(self, name) >= 1, f"{path}.{name}", "must be >= 1")


@dataclass
class PlaceholderConfig:
    image: str = "<image>"
    audio: str = "<audio>"
    video: str = "<video>"

    def validate(self, path: str = "placeholders") -> None:
        values = [self.image, self.audio, self.video]
        require(all(values), path, "placeholders must be non-empty strings")
        require(len(set(values)) == 3, path, "image, audio and video placeholders must differ")


@dataclass
class OmniConfig:
    llm: LLMConfig
    vision: VisionConfig | None = None  # also encodes video frames
    audio: AudioConfig | None = None
    video: VideoConfig | None = None  # needs `vision`
    connectors: dict[str, ConnectorConfig] = field(default_factory=dict)  # per modality; video defaults to image's
    placeholders: PlaceholderConfig = field(default_factory=PlaceholderConfig)
    trained_parts: list[str] = field(default_factory=list)  # base parts whose weights a checkpoint stores
    lora: dict[str, Any] | None = None  # PEFT LoRA settings when the LLM carries adapters
    fusion: FusionConfig = field(default_factory=FusionConfig)  # embed media as tokens, or cross-attend to them

    def __post_init__(self) -> None:
        self.fusion = FusionConfig() if self.fusion is None else self.fusion
        check_fields(self)
        for modality in self.modalities:
            if modality not in self.connectors and not (modality == "video" and "image" in self.connectors):
                if not (modality == "audio" and self.audio.mode == "transcribe"):
                    self.connectors[modality] = ConnectorConfig()
        self.validate()

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities this model accepts, in canonical order."""
        present = {"image": self.vision is not None, "audio": self.audio is not None, "video": self.video is not None}
        return tuple(m for m in MODALITIES if present[m])

    def connector_for(self, modality: str) -> str:
        """Key of the connector that maps `modality` (video shares the image connector unless given its own)."""
        if modality == "video" and "video" not in self.connectors:
            return "image"
        return modality

    def validate(self) -> None:
        self.llm.validate()
        for name in ("vision", "audio", "video"):
            part = getattr(self, name)
            if part is not None:
                part.validate(name)
        require(self.video is None or self.vision is not None, "video", "video needs a vision encoder: set `vision`")
        for key, connector in self.connectors.items():
            require(key in MODALITIES, f"connectors.{key}", f"unknown modality; choose from {MODALITIES}")
            require(key in self.modalities, f"connectors.{key}", f"the model has no {key} encoder")
            require(key != "audio" or self.audio.mode == "embed", "connectors.audio",
                     "audio.mode is transcribe: speech reaches the LLM as text, through no connector; remove it")
            connector.validate(f"connectors.{key}")
        self.placeholders.validate()
        self.fusion.validate()
        require(
            self.fusion.mode == "embed" or bool(self.connectors),
            "fusion.mode",
            "gated_xattn needs a media encoder with a connector (vision, or audio in embed mode)",
        )
        for part in self.trained_parts:
            require(part in ("llm", "vision", "audio"), "trained_parts", f"unknown part {part!r}")

    # Serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OmniConfig:
        return coerce(cls, data, "")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_file(cls, path: str | Path) -> OmniConfig:
        """Read a config from .json, .yaml or .yml."""
        return cls.from_dict(read_mapping(path, "config file"))

