"""The quickstart-shaped model (packaged DINOv2-S + MLP + Qwen2.5-0.5B with LoRA) exported to GGUF Q8_0."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("llama_cpp")

from omnilm import OmniLM
from omnilm.export.gguf import export_gguf
from omnilm.lora import attach_lora
from omnilm.quickstart import load_recipe
from omnilm.training.build import model_config

pytestmark = pytest.mark.real
PHOTOS = ("astronaut", "cat", "coffee", "rocket", "chelsea")


@pytest.fixture(scope="module")
def quickstart_shaped():
    config = model_config(load_recipe().train.model)
    config.audio = None  # speech is transcribed to text first: the LLM path is the same as typed
    torch.manual_seed(0)
    lm = OmniLM.from_config(config)
    attach_lora(lm.model, {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]})
    with torch.no_grad():  # a trained-looking adapter: the merge must carry it into the GGUF
        for name, param in lm.model.llm.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.02)
    lm.model.eval()
    return lm


def test_q8_0_export_answers_as_pytorch_on_real_photos(quickstart_shaped, tmp_path):
    from PIL import Image
    from skimage import data

    import omnilm

    out = export_gguf(quickstart_shaped, tmp_path / "q8", quant="Q8_0")
    engine = omnilm.load(out)
    conversations = [[{"role": "user", "content": [
        {"type": "image", "image": Image.fromarray(getattr(data, name)())},
        {"type": "text", "text": "What is the main colour in this image? Answer in one word."}]}] for name in PHOTOS]
    expected = quickstart_shaped.chat_batch(conversations, max_new_tokens=6)
    answers = engine.chat_batch(conversations, max_new_tokens=6)
    engine.close()
    assert answers == expected and all(expected)
