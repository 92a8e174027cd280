"""Dual encoder: config checks, the contrastive loss, toy training, save/load, zero-shot, embeddings.

Training itself (`omnilm train` of a dual-encoder config, exact resume) is tested in test_train_dual.py."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch

import omnilm
from omnilm.dual import DualEncoder, DualEncoderConfig, contrastive_loss, embed_request
from omnilm.dual.evaluate import retrieval_metrics, retrieval_recall
from omnilm.dual.testing import tiny_dual, tiny_dual_config, toy_caption, train_toy_dual
from omnilm.dual.zeroshot import classifier_weights, classify
from omnilm.errors import ConfigError, OmniError


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A tiny dual encoder trained for 60 steps on 96 coloured squares and discs (a few seconds)."""
    directory = tmp_path_factory.mktemp("toy")
    checkpoint = train_toy_dual(directory)
    images = sorted((directory / "train-images").glob("*.png"))
    return omnilm.load(checkpoint), images, directory


def test_config_validation_names_the_field():
    good = tiny_dual_config()
    assert DualEncoderConfig.from_dict(good.to_dict()) == good  # JSON round trip (with "kind")
    with pytest.raises(ConfigError, match="vision.pooling"):
        tiny_dual_config(vision={"source": "x", "pooling": "max"})
    with pytest.raises(ConfigError, match="projection_dim"):
        tiny_dual_config(projection_dim=0)
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['colour'\]"):
        tiny_dual_config(text={"source": "x", "colour": 1})


def test_contrastive_loss_is_symmetric_infonce_and_handles_repeated_captions():
    logits = torch.randn(6, 6)
    targets = torch.arange(6)
    expected = (torch.nn.functional.cross_entropy(logits, targets) +
                torch.nn.functional.cross_entropy(logits.t(), targets)) / 2
    assert torch.allclose(contrastive_loss(logits), expected)
    assert contrastive_loss(20 * torch.eye(4)) < 1e-3
    # two pairs share a caption: scoring the twin as high as the pair must not count as a mistake
    ids = torch.tensor([0, 0, 1, 2])
    same = ids[:, None] == ids[None, :]
    grads = []
    for positives in (same, None):
        twins = (20 * same.float()).requires_grad_(True)
        contrastive_loss(twins, positives).backward()
        grads.append(twins.grad[0, 1].item())
    assert abs(grads[0]) < 1e-6 and grads[1] > 0.05  # plain InfoNCE would push the twin caption away


def test_tiny_dual_encoder_learns_a_toy_pairing(toy):
    model, images, _ = toy
    captions = [toy_caption(p) for p in images]
    gallery = sorted(set(captions))
    untrained = tiny_dual()
    before = retrieval_recall(untrained.embed_images(images), captions, untrained.embed_texts(gallery), gallery)
    after = retrieval_recall(model.embed_images(images), captions, model.embed_texts(gallery), gallery)
    assert after["image_to_text/R@1"] >= 0.95 and after["text_to_image/R@1"] >= 0.95, after
    assert before["image_to_text/R@1"] < 0.6, before  # chance is 1/8: the gain comes from training


def test_checkpoint_round_trip_is_exact(toy, tmp_path):
    model, images, _ = toy
    assert model.config.trained_parts == ["text"]  # LiT: the text tower trained, the image tower by source
    reloaded = omnilm.load(model.save(tmp_path / "copy"))
    assert reloaded.identity == model.identity
    assert np.array_equal(reloaded.embed_images(images[:4]), model.embed_images(images[:4]))
    assert np.array_equal(reloaded.embed_texts(["a red disc"]), model.embed_texts(["a red disc"]))
    standalone = omnilm.load(model.save(tmp_path / "full", full=True))
    assert standalone.config.vision.source == "./vision"
    assert np.allclose(standalone.embed_images(images[:2]), model.embed_images(images[:2]), atol=1e-6)


def test_load_refuses_what_is_not_a_dual_encoder(tmp_path):
    with pytest.raises(OmniError, match="not an omnilm checkpoint"):
        DualEncoder.from_pretrained(tmp_path)
    (tmp_path / "omnilm.json").write_text('{"llm": {"source": "x"}}')
    with pytest.raises(OmniError, match="not a dual encoder"):
        DualEncoder.from_pretrained(tmp_path)


def test_omnilm_load_returns_what_the_checkpoint_kind_says(toy, tiny_lm, tmp_path):
    model, _, _ = toy
    assert isinstance(omnilm.load(model.save(tmp_path / "dual")), DualEncoder)  # "kind": "dual_encoder"
    assert isinstance(omnilm.load(tiny_lm.save(tmp_path / "lm")), omnilm.OmniLM)  # no kind: an OmniConfig
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "omnilm.json").write_text('{"kind": "diffusion"}')
    with pytest.raises(OmniError, match="not a dual encoder"):
        omnilm.load(tmp_path / "odd")


def test_zero_shot_classification_with_templates(toy):
    model, images, _ = toy
    names = ["red disc", "red square", "blue disc", "blue square", "green disc", "green square", "yellow disc",
             "yellow square"]
    weights = classifier_weights(model, names)
    assert weights.shape == (8, model.dim) and np.allclose(np.linalg.norm(weights, axis=1), 1, atol=1e-5)
    predicted = classify(model, images, names, templates=("a {}",))
    truth = [toy_caption(p).removeprefix("a ") for p in images]
    assert np.mean([p == t for p, t in zip(predicted, truth)]) >= 0.95
    with pytest.raises(ValueError, match="needs a {}"):
        classifier_weights(model, names, templates=("no slot",))


def test_evaluate_reports_recall_and_zero_shot(toy):
    from omnilm.dual.captions import CaptionRecord

    model, images, _ = toy
    records = [CaptionRecord(str(p), toy_caption(p), toy_caption(p).split()[2], toy_caption(p).split()[1])
               for p in images]
    result = retrieval_metrics(model, records)
    assert result["pairs"] == len(images) and set(result) >= {"image_to_text/R@5", "text_to_image/R@1"}
    assert "zeroshot/shape" not in result  # easy-vqa class names: no toy record carries them


def test_embed_request_mixes_texts_and_images(toy, red_image):
    model, _, _ = toy
    buffer = io.BytesIO()
    red_image.save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    out = embed_request(model, ["a red disc", url, {"text": "a blue square"}, {"image_url": {"url": url}}])
    assert len(out) == 4 and all(len(v) == model.dim for v in out)
    assert np.allclose(np.linalg.norm(np.array(out), axis=1), 1, atol=1e-5)
    assert np.allclose(out[1], out[3], atol=1e-5) and not np.allclose(out[0], out[2], atol=1e-3)
    assert len(embed_request(model, "a red disc")) == 1
    with pytest.raises(OmniError, match=r"input\[0\]"):
        embed_request(model, [42])
    with pytest.raises(OmniError, match="not a readable image"):
        embed_request(model, ["data:image/png;base64,aGVsbG8="])
