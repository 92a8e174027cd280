"""pkg:gemma-3-270m, dequantized from GGUF, continues a simple text."""

import pytest

from omnilm.packaged import resolve

pytestmark = pytest.mark.real


def test_completes_the_days_of_the_week():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve("pkg:gemma-3-270m")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = tokenizer("Monday, Tuesday, Wednesday,", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    completion = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert completion.strip().startswith("Thursday"), completion
