"""Checks shared by the export tests: an exported directory against the omnilm model it came from."""

from __future__ import annotations

import torch
import transformers

from omnilm.lm import OmniLM
from omnilm.testing import make_shape_image

QUESTION = "what color is the shape?"


def _hf_messages():
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]


def _omni_messages(image):
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}]}]


def assert_llava_matches(lm: OmniLM, directory, *, image=None) -> transformers.LlavaForConditionalGeneration:
    """Plain transformers on the exported files (its own processor, chat template and pixels) against omnilm:
    the same ids and pixels, logits within 1e-4 (fp32), the same greedy text."""
    llava = transformers.LlavaForConditionalGeneration.from_pretrained(directory, dtype=torch.float32).eval()
    processor = transformers.AutoProcessor.from_pretrained(directory)
    image = make_shape_image("red", size=64) if image is None else image
    text = processor.apply_chat_template(_hf_messages(), add_generation_prompt=True)
    theirs = processor(images=[image], text=text, return_tensors="pt")
    ours = lm.processor(_omni_messages(image), add_generation_prompt=True)
    assert theirs["input_ids"].tolist() == ours["input_ids"].tolist()  # same template, same image token count
    torch.testing.assert_close(theirs["pixel_values"], ours["pixel_values"], atol=1e-5, rtol=0)
    with torch.no_grad():
        expected, logits = lm.model(**ours).logits, llava(**theirs).logits
        vocab = expected.shape[-1]  # the export may add zero rows for the image token (see hf_llava.vocab_sizes)
        torch.testing.assert_close(logits[..., :vocab], expected, atol=1e-4, rtol=0)
        assert not logits[..., vocab:].any()
        new = llava.generate(**theirs, max_new_tokens=8, do_sample=False)[0, theirs["input_ids"].shape[1]:]
    answer = lm.chat(_omni_messages(image), max_new_tokens=8)
    assert answer and processor.decode(new, skip_special_tokens=True) == answer
    return llava
