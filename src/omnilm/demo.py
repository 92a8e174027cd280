"""A short demonstration on a tiny random model: every modality in, text out, save and reload.

`omnilm quickstart --tiny` runs it: the pipeline in seconds. The full quickstart (`make demo`) trains real
packaged parts; this one does not, and says so.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import torch


def tiny_demo(out_dir: str | Path) -> Iterator[str]:
    """Run the demonstration, yielding lines to show."""
    from omnilm.lm import OmniLM
    from omnilm.testing import make_shape_image, make_tone, make_video, tiny_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    yield "omnilm quickstart — a tiny *random* model (a few MB, untrained, answers are noise):"
    yield "it shows the pipeline end to end; `omnilm quickstart` without --tiny trains real packaged parts."
    start = time.perf_counter()
    lm = tiny_model(("image", "audio", "video"))
    params = sum(p.numel() for p in lm.model.parameters())
    yield f"built {lm.config.modalities} → {params / 1e6:.2f} M parameters in {time.perf_counter() - start:.1f} s"
    video = make_video(out / "moving-square.mp4")
    content = [{"type": "image", "image": make_shape_image()}, {"type": "audio", "audio": make_tone()},
               {"type": "video", "video": str(video)},
               {"type": "text", "text": "Describe the image, the sound and the video."}]
    messages = [{"role": "user", "content": content}]
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
