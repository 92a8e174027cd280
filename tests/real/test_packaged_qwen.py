"""pkg:qwen2.5-0.5b-instruct, dequantized from GGUF, answers a factual question."""

import json

import pytest
import torch

from omnilm.packaged import resolve

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def qwen():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve("pkg:qwen2.5-0.5b-instruct")
    return path, AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()


def test_cached_copy_is_plain_bf16_safetensors(qwen):
    path, _, model = qwen
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config
    assert (path / "model.safetensors").is_file()
    assert model.dtype == torch.bfloat16


def test_greedy_chat_names_paris(qwen):
    _, tokenizer, model = qwen
    assert tokenizer.chat_template, "the GGUF's chat template should be kept"
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer
    assert out.shape[1] - ids["input_ids"].shape[1] < 20, "generation should stop at the end of the turn"
