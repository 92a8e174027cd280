"""`omnilm train` on a generated image task: stage 1, then stage 2 with LoRA, then LoRA merging.

A tiny random model learns the colour of a shape and is scored on held-out images it never saw.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from omnilm.data.records import read_records
from omnilm.data.toy import build_shapes
from train_helpers import accuracy, run_train


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return Path(build_shapes(tmp_path_factory.mktemp("shapes"), train=480, test=100, seed=1)["dir"])


@pytest.fixture(scope="module")
def stage1(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "stage1"
    return run_train("tiny-image.yaml", out, f"data.train={shapes / 'train.jsonl'}",
                     f"data.eval={shapes / 'test.jsonl'}", f"feature_cache.dir={out.parent / 'features'}")


@pytest.fixture(scope="module")
def stage2(shapes, stage1):
    out = stage1.parent / "stage2"
    return run_train("tiny-image-lora.yaml", out, f"model.checkpoint={stage1 / 'final'}",
                     f"data.train={shapes / 'train.jsonl'}", f"data.eval={shapes / 'test.jsonl'}",
                     f"feature_cache.dir={out.parent / 'features'}")


def test_stage1_learns_colours_of_unseen_images(stage1, shapes):
    assert accuracy(stage1 / "final", shapes / "test.jsonl") >= 0.95
    png = stage1 / "loss.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from omnilm.training.metrics import read_metrics

    records = read_metrics(stage1 / "metrics.jsonl")
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < losses[0] / 10  # it learned, not just ran
    assert any("eval_loss" in r for r in records)
    assert all({"lr", "samples_per_s", "grad_norm"} <= set(r) for r in records if "loss" in r)


def test_stage2_lora_keeps_or_improves(stage1, stage2, shapes):
    import json

    config = json.loads((stage2 / "final" / "omnilm.json").read_text())
    assert config["lora"]["r"] == 8  # adapters were trained and saved
    before = accuracy(stage1 / "final", shapes / "test.jsonl")
    after = accuracy(stage2 / "final", shapes / "test.jsonl")
    assert after >= 0.95 and after >= before - 0.02, (before, after)
    assert (stage2 / "loss.png").is_file()


def test_lora_merged_model_gives_the_same_outputs(stage2, shapes):
    import omnilm
    from omnilm.lora import merge_lora

    lm = omnilm.load(str(stage2 / "final"))
    assert lm.config.lora is not None
    prompts = [r.prompt for r in read_records(shapes / "test.jsonl")[:8]]
    inputs = lm.processor(prompts, padding_side="left")
    with torch.no_grad():
        before = lm.model(**inputs).logits
        answers = lm.chat_batch(prompts, max_new_tokens=4)
        merge_lora(lm.model)
        after = lm.model(**inputs).logits
    assert lm.config.lora is None and "lora_" not in str(list(lm.model.state_dict()))
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    assert lm.chat_batch(prompts, max_new_tokens=4) == answers


def test_stage2_merged_export_loads_and_matches(stage2, shapes, tmp_path):
    """export.merge_lora writes a checkpoint without adapters that answers like the adapter one."""
    import omnilm

    out = run_train("tiny-image-lora.yaml", tmp_path / "merged", f"model.checkpoint={stage2 / 'final'}",
                    f"data.train={shapes / 'train.jsonl'}", "data.eval=null", "optim.max_steps=1",
                    "stage.llm.lr=1.0e-12", "stage.connectors.lr=1.0e-12", "export.merge_lora=true",
                    f"feature_cache.dir={tmp_path / 'features'}")
    merged = omnilm.load(str(out / "final"))
    assert merged.config.lora is None and "llm" in merged.config.trained_parts
    prompts = [r.prompt for r in read_records(shapes / "test.jsonl")[:8]]
    assert merged.chat_batch(prompts, max_new_tokens=4) == omnilm.load(str(stage2 / "final")).chat_batch(
        prompts, max_new_tokens=4)
