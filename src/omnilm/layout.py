"""MediaLayout: how media becomes tensors and how many tokens each item takes.

Computed once from an OmniConfig and the parts' configs (no weights), saved with the processor, and
read by the processor — the only code that expands placeholders.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omnilm.config import OmniConfig
from omnilm.configkit import coerce
from omnilm.connectors import connector_tokens
from omnilm.encoders.vision import pooled_grid, prefix_token_count, vision_tower_config
from omnilm.pixels import CLIP_MEAN, CLIP_STD, image_preprocessing
from omnilm.sources import resolve_source


@dataclass
class MediaLayout:
    placeholders: dict[str, str]  # modality → placeholder string in text
    image_size: int | None = None  # square side images and frames are resized/cropped to
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD
    image_tokens: int | None = None  # tokens per image after encoder, pooling and connector
    video_frames: int | None = None  # frames sampled per video
    video_tokens: int | None = None  # tokens per video
    audio_stack: int | None = None  # Whisper frames stacked per token
    audio_connector: dict[str, Any] = field(default_factory=dict)  # type + options, to count audio tokens
    audio_max_seconds: float | None = None
    audio_mode: str | None = None  # embed | transcribe
    max_length: int | None = None  # LLM context window
    fusion: str = "embed"  # gated_xattn: one placeholder token per item marks where the media sits
    system_prompt: str | None = None  # added to conversations that have no system message (llm.system_prompt)

    @property
    def one_token_per_item(self) -> bool:
        return self.fusion == "gated_xattn"

    def audio_tokens(self, num_samples: int) -> int:
        from omnilm.encoders.audio import audio_token_count

        if self.one_token_per_item:
            return 1
        encoder_tokens = audio_token_count(num_samples, self.audio_stack)
        return connector_tokens(self.audio_connector["type"], encoder_tokens, **self.audio_connector["options"])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MediaLayout:
        return coerce(cls, data, "layout")  # JSON lists become the tuples they were


def compute_layout(cfg: OmniConfig, base_dir: str | Path | None = None) -> MediaLayout:
    """Derive the layout from `cfg` by reading each part's config and preprocessing files."""
    import transformers

    layout = MediaLayout(
        placeholders={m: getattr(cfg.placeholders, m) for m in cfg.modalities},
        fusion=cfg.fusion.mode,
        system_prompt=cfg.llm.system_prompt,
    )
    llm_config = transformers.AutoConfig.from_pretrained(
        resolve_source(cfg.llm.source, base_dir), trust_remote_code=cfg.llm.trust_remote_code
    )
    llm_config = getattr(llm_config, "text_config", None) or llm_config
    layout.max_length = cfg.llm.max_length or getattr(llm_config, "max_position_embeddings", None)

    if cfg.vision is not None:
        source = resolve_source(cfg.vision.source, base_dir)
        tower = vision_tower_config(
            transformers.AutoConfig.from_pretrained(source, trust_remote_code=cfg.vision.trust_remote_code)
        )
        size, mean, std = image_preprocessing(source, tower.image_size)
        layout.image_size = cfg.vision.image_size or size
        layout.image_mean, layout.image_std = mean, std
        grid = pooled_grid(layout.image_size // tower.patch_size, cfg.vision.pooling, cfg.vision.pool_size)
        per_image = grid**2 + (0 if cfg.vision.drop_cls else prefix_token_count(tower))
        if "image" in cfg.connectors:
            connector = cfg.connectors["image"]
            layout.image_tokens = connector_tokens(connector.type, per_image, **connector.options)
        if cfg.video is not None:
            connector = cfg.connectors[cfg.connector_for("video")]
            per_video = per_image * (cfg.video.num_frames // cfg.video.temporal_pool)
            layout.video_frames = cfg.video.num_frames
            layout.video_tokens = connector_tokens(connector.type, per_video, **connector.options)

    if cfg.audio is not None:
        layout.audio_mode = cfg.audio.mode
        layout.audio_stack = cfg.audio.stack_factor
        layout.audio_max_seconds = cfg.audio.max_seconds
        if cfg.audio.mode == "embed":
            connector = cfg.connectors["audio"]
            layout.audio_connector = {"type": connector.type, "options": dict(connector.options)}
    if layout.one_token_per_item:  # the media reach the LLM by cross-attention, not as tokens
        layout.image_tokens = layout.image_tokens and 1
        layout.video_tokens = layout.video_tokens and 1
    return layout
