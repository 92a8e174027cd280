"""An OmniModel assembled from the packaged parts: DINOv2-S + Whisper-base + Qwen2.5-0.5B-Instruct."""

import subprocess

import pytest
import torch

from omnilm import OmniConfig, OmniLM
from omnilm.config import AudioConfig, LLMConfig, VisionConfig

pytestmark = pytest.mark.real


def speak(text: str, path) -> str:
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "140", "-w", str(path), text], check=True)
    return str(path)


@pytest.fixture(scope="module")
def photo():
    from PIL import Image
    from skimage import data

    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def stack():
    config = OmniConfig(
        llm=LLMConfig(source="pkg:qwen2.5-0.5b-instruct"),
        vision=VisionConfig(source="pkg:dinov2-small", pooling="avg", pool_size=4),
        audio=AudioConfig(source="pkg:whisper-base", stack_factor=4),
    )
    torch.manual_seed(0)
    return OmniLM.from_config(config)


@pytest.mark.requires_tool("espeak-ng")
def test_forward_generate_and_round_trip(stack, photo, tmp_path):
    clip = speak("What is in this picture?", tmp_path / "question.wav")
    messages = [
        {
            "role": "user",
            "content": [{"type": "image", "image": photo}, {"type": "audio", "audio": clip},
                        {"type": "text", "text": "Answer the question."}],
        }
    ]
    inputs = stack.processor(messages)
    layout = stack.processor.layout
    assert layout.image_size == 224 and layout.image_tokens == 16  # 16×16 patches of 14 px, 4×4 average pool
    with torch.no_grad():
        logits = stack.model(**inputs).logits
    assert logits.shape[-1] == stack.model.llm.config.vocab_size
    assert torch.isfinite(logits).all()
    reply = stack.chat(messages, max_new_tokens=4)
    assert isinstance(reply, str)
    again = OmniLM.from_pretrained(stack.save(tmp_path / "ckpt"))
    with torch.no_grad():
        assert torch.equal(logits, again.model(**again.processor(messages)).logits)


@pytest.mark.requires_tool("espeak-ng")
def test_transcribe_mode_answers_a_spoken_question(tmp_path):
    config = OmniConfig(
        llm=LLMConfig(source="pkg:qwen2.5-0.5b-instruct"),
        audio=AudioConfig(source="pkg:whisper-base", mode="transcribe"),
    )
    lm = OmniLM.from_config(config)
    clip = speak("What is the capital of France?", tmp_path / "france.wav")
    reply = lm.chat([{"role": "user", "content": [{"type": "audio", "audio": clip}]}], max_new_tokens=16)
    assert "paris" in reply.lower()
