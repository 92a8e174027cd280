"""Dual encoder: config checks, the contrastive loss, toy training, resume, save/load, zero-shot, embeddings."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch

from omnilm.dual import DualEncoderConfig, DualTrainConfig, contrastive_loss, embed_request, load_dual
from omnilm.dual.evaluate import evaluate, retrieval_recall
from omnilm.dual.testing import tiny_dual, tiny_dual_config, toy_caption, train_toy_dual
from omnilm.dual.zeroshot import classifier_weights, classify
from omnilm.errors import ConfigError, OmniError


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A tiny dual encoder trained for 60 steps on 96 coloured squares and discs (a few seconds)."""
    directory = tmp_path_factory.mktemp("toy")
    checkpoint = train_toy_dual(directory)
    images = sorted((directory / "train-images").glob("*.png"))
    return load_dual(checkpoint), images, directory


def test_config_validation_names_the_field():
    good = tiny_dual_config()
    assert DualEncoderConfig.from_dict(good.to_dict()) == good  # JSON round trip (with "kind")
    with pytest.raises(ConfigError, match="vision.pooling"):
        tiny_dual_config(vision={"source": "x", "pooling": "max"})
    with pytest.raises(ConfigError, match="projection_dim"):
        tiny_dual_config(projection_dim=0)
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['colour'\]"):
        tiny_dual_config(text={"source": "x", "colour": 1})
    with pytest.raises(ConfigError, match="exactly one of model, checkpoint"):
        DualTrainConfig(model=None, checkpoint=None)
    with pytest.raises(ConfigError, match="stage.heads.mode"):
        DualTrainConfig(model=good, stage={"heads": {"mode": "frozen"}})
    with pytest.raises(ConfigError, match="stage.text.mode"):
        DualTrainConfig(model=good, stage={"text": {"mode": "lora"}})


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
    reloaded = load_dual(model.save(tmp_path / "copy"))
    assert reloaded.identity == model.identity
    assert np.array_equal(reloaded.embed_images(images[:4]), model.embed_images(images[:4]))
    assert np.array_equal(reloaded.embed_texts(["a red disc"]), model.embed_texts(["a red disc"]))
    standalone = load_dual(model.save(tmp_path / "full", full=True))
    assert standalone.config.vision.source == "./vision"
    assert np.allclose(standalone.embed_images(images[:2]), model.embed_images(images[:2]), atol=1e-6)


def test_load_refuses_what_is_not_a_dual_encoder(tmp_path):
    with pytest.raises(OmniError, match="not an omnilm checkpoint"):
        load_dual(tmp_path)
    (tmp_path / "omnilm.json").write_text('{"llm": {"source": "x"}}')
    with pytest.raises(OmniError, match="not a dual encoder"):
        load_dual(tmp_path)


def test_training_resumes_after_an_interrupt(tmp_path, monkeypatch):
    from omnilm.dual import model as model_module
    from omnilm.dual.train import train_dual

    calls = {"n": 0}
    original = model_module.DualEncoder.forward

    def flaky_forward(self, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return original(self, **kwargs)

    checkpoint = train_toy_dual(tmp_path / "data", steps=1)  # writes the images and captions
    config = DualTrainConfig(checkpoint=str(checkpoint), train=str(tmp_path / "data" / "train.jsonl"), eval=None,
                             output_dir=str(tmp_path / "run"), batch_size=16, max_steps=12, num_threads=1)
    monkeypatch.setattr(model_module.DualEncoder, "forward", flaky_forward)
    stopped = train_dual(config)
    assert stopped.final_dir is None and stopped.step == 7
    assert (tmp_path / "run" / "checkpoint" / "trainer_state.pt").is_file()
    calls["n"] = 100  # no more interrupts
    done = train_dual(config)
    assert done.step == 12 and calls["n"] == 105  # resumed at step 7: five more steps
    assert load_dual(done.final_dir).config.trained_parts == ["text"]


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
    result = evaluate(model, records)
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


def test_cli_train_dual_with_overrides(toy, tmp_path, capsys):
    import yaml

    from omnilm.cli.main import main

    _, _, directory = toy
    config = {"model": tiny_dual_config().to_dict(), "train": str(directory / "train.jsonl"), "eval": None,
              "output_dir": str(tmp_path / "run"), "batch_size": 16, "num_threads": 1}
    config["model"].pop("kind")
    (tmp_path / "dual.yaml").write_text(yaml.safe_dump(config))
    overrides = ["--set", "max_steps=3", "--set", "stage.text.mode=frozen"]
    assert main(["train-dual", str(tmp_path / "dual.yaml"), *overrides]) == 0
    assert "trained 3 steps" in capsys.readouterr().out
    assert load_dual(tmp_path / "run" / "final").config.trained_parts == []  # text frozen: heads only
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**config, "batch_size": 1}))
    assert main(["train-dual", str(tmp_path / "bad.yaml")]) == 2
    assert "batch_size" in capsys.readouterr().err


def test_shipped_dual_config_is_valid():
    from pathlib import Path

    config = DualTrainConfig.from_file(Path(__file__).parents[1] / "configs" / "dual-easy-vqa.yaml", [])
    assert config.model.vision.source == "pkg:dinov2-small"
