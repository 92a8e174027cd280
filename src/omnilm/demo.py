"""A short demonstration on a tiny random model: every modality in, text out, save and reload.

`omnilm quickstart --tiny` runs it: the pipeline in seconds. The full quickstart (`make demo`) trains real
packaged parts; this one does not, and says so.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw


def make_shape_image(color: str = "red", size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).ellipse((12, 12, size - 12, size - 12), fill=color)
    return image


def make_tone(seconds: float = 1.0, hz: float = 440.0, rate: int = 16_000) -> tuple[np.ndarray, int]:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), rate


def make_video(path: Path, frames: int = 8, size: int = 64) -> Path:
    """A short MPEG-4 clip of a square moving left to right."""
    import av

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


def tiny_demo(out_dir: str | Path) -> Iterator[str]:
    """Run the demonstration, yielding lines to show."""
    from omnilm.lm import OmniLM
    from omnilm.testing import tiny_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    yield "omnilm quickstart — a tiny *random* model (a few MB, untrained, answers are noise):"
    yield "it shows the pipeline end to end; `omnilm quickstart` without --tiny trains real packaged parts."
    start = time.perf_counter()
    lm = tiny_model(("image", "audio", "video"))
    params = sum(p.numel() for p in lm.model.parameters())
    yield f"built {lm.config.modalities} → {params / 1e6:.2f} M parameters in {time.perf_counter() - start:.1f} s"
    video = make_video(out / "moving-square.mp4")
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": make_shape_image()},
                {"type": "audio", "audio": make_tone()},
                {"type": "video", "video": str(video)},
                {"type": "text", "text": "Describe the image, the sound and the video."},
            ],
        }
    ]
    inputs = lm.processor(messages)
    yield f"prompt: {inputs['input_ids'].shape[1]} tokens (image {lm.processor.layout.image_tokens}, " \
          f"video {lm.processor.layout.video_tokens}, audio {lm.processor.layout.audio_tokens(16_000)})"
    reply = lm.chat(messages, max_new_tokens=12)
    yield f"reply: {reply!r}"
    checkpoint = lm.save(out / "model")
    again = OmniLM.from_pretrained(checkpoint)
    with torch.no_grad():
        same = torch.equal(lm.model(**inputs).logits, again.model(**again.processor(messages)).logits)
    yield f"saved to {checkpoint}; reloaded logits identical: {same}"
    yield f"next: omnilm chat {checkpoint}   ·   omnilm generate {checkpoint} --prompt 'hi' --image IMG"
