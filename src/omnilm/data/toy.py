"""Small generated tasks for tests, examples and benchmarks (no downloads, seconds to build).

- shapes: a coloured circle / square / triangle on a light background → "what color is the shape?"
- tones: a sine tone in one of three pitch bands, with noise → "what pitch is the tone?"

Each item is drawn at random (position, size, jitter, noise), so held-out items are new images and
clips, not copies of training ones. Records are written in the LLaVA shape with relative media paths.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from omnilm.data.records import write_jsonl

COLORS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (235, 210, 20)}
SHAPES = ("circle", "square", "triangle")
PITCHES = {"low": 220.0, "middle": 660.0, "high": 1800.0}  # Hz; each clip jitters ±12%
SAMPLE_RATE = 16_000


def shape_image(shape: str, fill, *, size: int, box: tuple[int, int, int, int], background="white"):
    """A `size`×`size` RGB image of one filled circle, square or triangle inside `box` (x0, y0, x1, y1)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) // 2, y0), (x0, y1), (x1, y1)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")
    return image


def build_shapes(out_dir: str | Path, *, train: int = 400, test: int = 100, size: int = 32, seed: int = 0) -> dict:
    """Write images and `train.jsonl` / `test.jsonl`; returns {"dir", "files", "counts"}."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)

    def make(name: str) -> dict:
        color = list(COLORS)[rng.integers(len(COLORS))]
        shape = SHAPES[rng.integers(len(SHAPES))]
        background = tuple(int(v) for v in rng.integers(200, 256, size=3))
        side = int(rng.integers(size // 3, size * 3 // 4))
        x, y = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        jitter = rng.integers(-25, 26, size=3)
        fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLORS[color], jitter))
        image = shape_image(shape, fill, size=size, box=(x, y, x + side, y + side), background=background)
        pixels = np.asarray(image, dtype=np.int16) + rng.integers(-8, 9, size=(size, size, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out / "images" / f"{name}.png")
        return _record(name, "image", f"images/{name}.png", "<image>\nwhat color is the shape?", color)

    return _write(out, {"train": [make(f"train-{i}") for i in range(train)],
                        "test": [make(f"test-{i}") for i in range(test)]})


def build_tones(out_dir: str | Path, *, train: int = 300, test: int = 90, seed: int = 0) -> dict:
    """Write WAV clips (0.3–0.8 s) and `train.jsonl` / `test.jsonl`; returns {"dir", "files", "counts"}."""
    import soundfile

    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)

    def make(name: str) -> dict:
        label = list(PITCHES)[rng.integers(len(PITCHES))]
        frequency = PITCHES[label] * rng.uniform(0.88, 1.12)
        seconds = rng.uniform(0.3, 0.8)
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE  # (S,)
        clip = rng.uniform(0.2, 0.8) * np.sin(2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi))
        clip = clip + rng.normal(0, 0.02, size=t.shape)
        soundfile.write(out / "audio" / f"{name}.wav", clip.astype(np.float32), SAMPLE_RATE)
        return _record(name, "audio", f"audio/{name}.wav", "<audio>\nwhat pitch is the tone?", label)

    return _write(out, {"train": [make(f"train-{i}") for i in range(train)],
                        "test": [make(f"test-{i}") for i in range(test)]})


def _record(record_id: str, kind: str, path: str, prompt: str, answer: str) -> dict:
    return {"id": record_id, kind: path,
            "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]}


def _write(out: Path, splits: dict[str, list[dict]]) -> dict:
    files, counts = {}, {}
    for split, rows in splits.items():
        target = out / f"{split}.jsonl"
        write_jsonl(target, rows)
        files[target.name], counts[target.name] = str(target), len(rows)
    return {"dir": str(out), "files": files, "counts": counts}
