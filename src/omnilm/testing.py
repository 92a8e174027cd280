"""Tiny random models for tests and examples: a few MB, built locally, no downloads.

Parts (a 2-layer Qwen2-style LLM, a CLIP vision tower on 32-px images, a Whisper encoder) and a
byte-level BPE tokenizer are generated from a fixed seed and cached under `$OMNILM_CACHE/tiny`, so a
tiny model's config names real local sources and its checkpoints round-trip like any other.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omnilm.config import AudioConfig, ConnectorConfig, LLMConfig, OmniConfig, VideoConfig, VisionConfig
from omnilm.io import atomic_directory
from omnilm.lm import OmniLM
from omnilm.paths import cache_dir

WIDTH = 32  # hidden size of every tiny part
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<audio>", "<video>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = [
    "what color is the shape? what shape is it? is there a circle? yes no",
    "red green blue yellow black white gray orange purple brown teal",
    "circle square triangle rectangle star the a an of is in on what which",
    "The capital of France is Paris. Describe the image. Transcribe the audio.",
    "system user assistant You are a helpful assistant. 0 1 2 3 4 5 6 7 8 9",
]


def cache_root() -> Path:
    return cache_dir("tiny")


def tiny_parts(seed: int = 0) -> dict[str, str]:
    """Directories of the tiny LLM (+ tokenizer), vision tower and Whisper model, built once."""
    key = hashlib.sha256(json.dumps({"seed": seed, "width": WIDTH, "v": 2}).encode()).hexdigest()[:12]
    root = cache_root() / key
    parts = {name: str(root / name) for name in ("llm", "vision", "audio")}
    if not (root / "complete").is_file():
        with atomic_directory(root) as staging:
            _build_parts(staging, seed)
            (staging / "complete").write_text("ok")
    return parts


def tiny_model(*args: Any, **kwargs: Any) -> OmniLM:
    """A random OmniLM of a few MB, assembled from `tiny_config(*args, **kwargs)`: `modalities` with
    `connector` on every modality; `overrides` replace whole config sections (e.g. `vision=VisionConfig(...)`)."""
    return OmniLM.from_config(tiny_config(*args, **kwargs), name="tiny")


def tiny_config(
    modalities: tuple[str, ...] = ("image", "audio", "video"),
    connector: str = "mlp",
    *,
    seed: int = 0,
    connector_options: dict[str, Any] | None = None,
    **overrides: Any,
) -> OmniConfig:
    parts = tiny_parts(seed)
    sections: dict[str, Any] = {"llm": LLMConfig(source=parts["llm"])}
    if "image" in modalities or "video" in modalities:
        sections["vision"] = VisionConfig(source=parts["vision"])
    if "audio" in modalities:
        sections["audio"] = AudioConfig(source=parts["audio"], stack_factor=2)
    if "video" in modalities:
        sections["video"] = VideoConfig(num_frames=4, temporal_pool=2)
    sections.update(overrides)
    keys = [m for m in ("image", "audio") if m in modalities]
    if "video" in modalities and "image" not in modalities:
        keys.append("video")
    if "audio" in keys and sections["audio"].mode == "transcribe":
        keys.remove("audio")  # speech reaches the LLM as Whisper's transcript
    connectors = {k: ConnectorConfig(type=connector, options=dict(connector_options or {})) for k in keys}
    sections["connectors"] = overrides.get("connectors", connectors)
    torch.manual_seed(seed)  # fresh connectors are drawn from this seed
    return OmniConfig(**sections)


def _build_parts(root: Path, seed: int) -> None:
    import transformers

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(root / "llm")
    llm_config = transformers.Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=WIDTH,
        intermediate_size=2 * WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        initializer_range=0.4,  # large enough that greedy outputs depend on the input (tests compare them)
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    llm = transformers.Qwen2ForCausalLM(llm_config)
    llm.generation_config = transformers.GenerationConfig(
        eos_token_id=llm_config.eos_token_id, pad_token_id=llm_config.pad_token_id
    )
    llm.save_pretrained(root / "llm")

    vision_config = transformers.CLIPVisionConfig(
        hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8,
    )
    transformers.CLIPVisionModel(vision_config).save_pretrained(root / "vision")
    transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        root / "vision"
    )

    whisper_config = transformers.WhisperConfig(
        vocab_size=len(tokenizer), d_model=WIDTH, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=2 * WIDTH, decoder_ffn_dim=2 * WIDTH, num_mel_bins=80,
        max_source_positions=1500, max_target_positions=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1,
    )
    transformers.WhisperForConditionalGeneration(whisper_config).save_pretrained(root / "audio")
    transformers.WhisperFeatureExtractor(feature_size=80).save_pretrained(root / "audio")


def build_tokenizer():
    """A byte-level BPE tokenizer (512 entries) trained on a fixed corpus, with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    core.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<image>", "<audio>", "<video>"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


# Media for tests and examples ---------------------------------------------------------------------
def make_shape_image(color: str = "red", size: int = 64):
    """A `color` disc on white."""
    from omnilm.data.toy import shape_image

    return shape_image("circle", color, size=size, box=(12, 12, size - 12, size - 12))


def make_tone(seconds: float = 1.0, hz: float = 440.0, rate: int = 16_000) -> tuple[np.ndarray, int]:
    """A sine tone as (samples, sample rate)."""
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), rate


def make_video(path: Path, frames: int = 8, size: int = 64) -> Path:
    """A short MPEG-4 clip of a square moving left to right."""
    import av
    from PIL import Image, ImageDraw

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            image = Image.new("RGB", (size, size), "white")
            x = 4 + i * (size - 24) // max(1, frames - 1)
            ImageDraw.Draw(image).rectangle((x, 20, x + 16, 36), fill="blue")
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
