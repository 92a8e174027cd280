"""`omnilm train` of a dual encoder (the contrastive objective): config checks, exact resume, the CLI."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

import omnilm
from omnilm.dual.testing import tiny_dual_config, toy_train_config, train_toy_dual
from omnilm.errors import ConfigError
from omnilm.training import TrainConfig, train


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> tuple[Path, Path]:
    """Shape images with captions and a tiny dual encoder trained on them for one step."""
    directory = tmp_path_factory.mktemp("toy")
    return directory, train_toy_dual(directory, steps=1)


def losses(out: Path) -> dict[int, float]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


def test_config_refuses_what_a_dual_encoder_cannot_do(tmp_path):
    good = toy_train_config(tmp_path)
    assert TrainConfig.from_dict(good).model.kind == "dual_encoder"

    def config(**stage_or_optim):
        return TrainConfig.from_dict({**good, **{k: {**good.get(k, {}), **v} for k, v in stage_or_optim.items()}})

    with pytest.raises(ConfigError, match="exactly one of config, checkpoint, tiny"):
        TrainConfig.from_dict({**good, "model": {}})
    with pytest.raises(ConfigError, match="stage.connectors.mode"):  # the heads: always trained
        config(stage={"connectors": {"mode": "frozen"}})
    with pytest.raises(ConfigError, match="stage.text.mode"):
        config(stage={"text": {"mode": "lora"}})
    with pytest.raises(ConfigError, match="stage.llm.mode: a dual encoder has no llm"):
        config(stage={"llm": {"mode": "lora"}})
    with pytest.raises(ConfigError, match="optim.batch_size"):
        config(optim={"batch_size": 1})
    with pytest.raises(ConfigError, match="model: unknown field"):
        config(model={"config": {**tiny_dual_config().to_dict(), "colour": 1}})
    with pytest.raises(ConfigError, match="stage.text.mode: only a dual encoder"):  # an LLM has no text tower
        TrainConfig.from_dict({"model": {"tiny": ["image"]}, "data": {"train": "x.jsonl"},
                               "stage": {"text": {"mode": "full"}}})


def test_training_resumes_exactly_after_sigterm(toy, tmp_path, monkeypatch):
    """A run stopped by SIGTERM and rerun gives the losses and weights of an uninterrupted run (dropout on:
    the text tower trains, so the RNG state must be restored too)."""
    from omnilm.dual import model as model_module

    directory, checkpoint = toy

    def config(out: Path) -> TrainConfig:
        return TrainConfig.from_dict(toy_train_config(directory, model={"checkpoint": str(checkpoint)},
                                                      output_dir=str(out), optim={"batch_size": 16, "max_steps": 12},
                                                      log_every=1, save_every=5))

    reference = train(config(tmp_path / "reference"))
    calls = {"n": 0}
    original = model_module.DualEncoderModel.forward

    def forward(self, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            os.kill(os.getpid(), signal.SIGTERM)  # the trainer finishes this step, saves and returns
        return original(self, **kwargs)

    monkeypatch.setattr(model_module.DualEncoderModel, "forward", forward)
    stopped = train(config(tmp_path / "run"))
    assert stopped.interrupted == "SIGTERM" and stopped.final_dir is None and stopped.step == 7
    calls["n"] = 100  # no more signals
    done = train(config(tmp_path / "run"))
    assert done.step == 12 and calls["n"] == 105  # resumed at step 7: five more steps
    assert losses(tmp_path / "run") == losses(tmp_path / "reference")  # bit-identical on the CPU
    assert sorted(losses(tmp_path / "run")) == list(range(1, 13))
    weights = [load_file(str(Path(r.final_dir) / "model.safetensors")) for r in (reference, done)]
    assert weights[0].keys() == weights[1].keys()
    assert all(weights[0][k].equal(weights[1][k]) for k in weights[0])
    assert omnilm.load(done.final_dir).config.trained_parts == ["text"]
    assert (tmp_path / "run" / "loss.png").is_file()


def test_cli_train_with_overrides(toy, tmp_path, capsys):
    from omnilm.cli.main import main

    directory, _ = toy
    config = toy_train_config(directory, output_dir=str(tmp_path / "run"), data={"train": str(directory / "train.jsonl"),
                              "eval": str(directory / "train.jsonl")}, optim={"batch_size": 16})
    (tmp_path / "dual.yaml").write_text(yaml.safe_dump(config))
    overrides = ["--set", "optim.max_steps=3", "--set", "stage.text.mode=frozen"]
    assert main(["train", str(tmp_path / "dual.yaml"), *overrides]) == 0
    out = capsys.readouterr().out
    assert "trained 3 steps" in out and '"image_to_text/R@1"' in out  # the eval metrics are printed
    assert omnilm.load(tmp_path / "run" / "final").config.trained_parts == []  # text frozen: heads only
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**config, "optim": {"batch_size": 1}}))
    assert main(["train", str(tmp_path / "bad.yaml")]) == 2
    assert "batch_size" in capsys.readouterr().err


def test_shipped_dual_config_is_valid():
    config = TrainConfig.from_file(Path(__file__).parents[1] / "configs" / "dual-easy-vqa.yaml", [])
    assert config.model.kind == "dual_encoder"
    assert config.model.config["vision"]["source"] == "pkg:dinov2-small"


def test_train_help_names_only_files_that_exist(capsys):
    import re

    from omnilm.cli.main import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    named = set(re.findall(r"configs/[\w./-]+\.yaml", capsys.readouterr().out))
    assert "configs/dual-easy-vqa.yaml" in named
    root = Path(__file__).resolve().parents[1]
    assert [name for name in sorted(named) if not (root / name).is_file()] == []
