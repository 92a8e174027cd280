"""A tiny random dual encoder for tests and examples: the tiny CLIP vision tower of `omnilm.testing`
(32-px images) and a 2-layer BERT text tower with the local BPE tokenizer, built once, no downloads."""

from __future__ import annotations

from pathlib import Path

import torch

from omnilm.dual.api import DualEncoder
from omnilm.dual.config import DualEncoderConfig
from omnilm.io import atomic_directory
from omnilm.testing import WIDTH, build_tokenizer, cache_root, tiny_parts


def tiny_text_tower(seed: int = 0) -> str:
    """Directory of a random 2-layer BERT (width 32) and its tokenizer, built once under the tiny cache."""
    root = cache_root() / f"dual-text-{seed}-v2"
    if not (root / "complete").is_file():
        import transformers

        with atomic_directory(root) as staging:
            torch.manual_seed(seed)
            tokenizer = build_tokenizer()
            tokenizer.save_pretrained(staging)
            config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=WIDTH, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=2 * WIDTH,
                                             max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id)
            transformers.BertModel(config).save_pretrained(staging)
            (staging / "complete").write_text("ok")
    return str(root)


def tiny_dual_config(seed: int = 0, **overrides) -> DualEncoderConfig:
    fields = {"vision": {"source": tiny_parts(seed)["vision"], "pooling": "cls_mean"},
              "text": {"source": tiny_text_tower(seed), "max_length": 16}, "projection_dim": 16}
    fields.update(overrides)
    return DualEncoderConfig(**fields)


def tiny_dual(seed: int = 0, name: str = "tiny-dual", **overrides) -> DualEncoder:
    """A random DualEncoder of well under 1 MB; `overrides` replace DualEncoderConfig fields."""
    return DualEncoder.from_config(tiny_dual_config(seed, **overrides), seed=seed, name=name)


def write_shape_images(directory: str | Path, count: int, *, size: int = 32, seed: int = 0) -> list[Path]:
    """`count` PNGs of a coloured square/disc on white, named by content (e.g. `0007-red-disc.png`)."""
    import numpy as np

    from omnilm.data.toy import shape_image

    colors = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 30, 220), "yellow": (230, 210, 20)}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        color = list(colors)[i % len(colors)]
        shape = ("square", "disc")[(i // len(colors)) % 2]
        x, y = rng.integers(0, size // 4, 2)
        box = (int(x), int(y), int(x) + size // 2 + 4, int(y) + size // 2 + 4)
        image = shape_image({"disc": "circle"}.get(shape, shape), colors[color], size=size, box=box)
        path = directory / f"{i:04d}-{color}-{shape}.png"
        image.save(path)
        paths.append(path)
    return paths


def toy_caption(path: str | Path) -> str:
    """The caption of a `write_shape_images` file: `0007-red-disc.png` → "a red disc"."""
    _, color, shape = Path(path).stem.split("-")
    return f"a {color} {shape}"


def toy_train_config(directory: str | Path, *, steps: int = 60, seed: int = 0, **sections) -> dict:
    """An `omnilm train` config (a mapping) for the tiny dual encoder on `directory`/train.jsonl (LiT);
    `sections` replace top-level sections."""
    directory = Path(directory)
    config = {
        "model": {"config": tiny_dual_config(seed).to_dict()},
        "data": {"train": str(directory / "train.jsonl")},
        "output_dir": str(directory / "run"),
        "stage": {"name": "lit", "vision": {"mode": "frozen"}, "text": {"mode": "full", "lr": 3e-3}},
        "optim": {"lr": 1e-2, "batch_size": 32, "max_steps": steps, "warmup_ratio": 0.05, "max_grad_norm": None},
        "feature_cache": {"dir": str(directory / "features")},
        "seed": seed,
        "log_every": 20,
    }
    return {**config, **sections}


def write_toy_captions(directory: str | Path, *, count: int = 96, seed: int = 0) -> Path:
    """`count` shape images under `directory`/train-images and their captions in `directory`/train.jsonl."""
    from omnilm.dual.captions import CaptionRecord, write_caption_jsonl

    directory = Path(directory)
    paths = write_shape_images(directory / "train-images", count, seed=seed)
    return write_caption_jsonl([CaptionRecord(str(p), toy_caption(p)) for p in paths], directory / "train.jsonl")


def train_toy_dual(directory: str | Path, *, count: int = 96, steps: int = 60, seed: int = 0) -> Path:
    """Train a tiny dual encoder on `count` shape images under `directory`; returns its checkpoint."""
    from omnilm.training import TrainConfig, train

    write_toy_captions(directory, count=count, seed=seed)
    return Path(train(TrainConfig.from_dict(toy_train_config(directory, steps=steps, seed=seed))).final_dir)
