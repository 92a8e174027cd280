"""pkg:minilm-l6 sentence embeddings (mean pooling) rank a paraphrase above an unrelated sentence."""

import pytest
import torch

from omnilm.packaged import resolve

pytestmark = pytest.mark.real


def test_paraphrase_ranks_above_unrelated_sentence():
    from transformers import AutoModel, AutoTokenizer

    path = resolve("pkg:minilm-l6")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    sentences = ["A man is playing a guitar.", "Someone is strumming a guitar.", "The stock market fell sharply today."]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        tokens = model(**batch).last_hidden_state  # (3, T, 384)
    mask = batch["attention_mask"].unsqueeze(-1).float()  # (3, T, 1)
    embeddings = torch.nn.functional.normalize((tokens * mask).sum(1) / mask.sum(1), dim=-1)  # (3, 384)
    paraphrase, unrelated = (embeddings[0] @ embeddings[1]).item(), (embeddings[0] @ embeddings[2]).item()
    assert paraphrase > unrelated + 0.3, (paraphrase, unrelated)
