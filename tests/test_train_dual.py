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


def test_two_processes_match_one_with_the_same_micro_batches(toy, tmp_path):
    """2 processes × 8 pairs = 1 process × 8 pairs × 2 accumulated micro-batches: the same micro-batches
    (the same negatives), so the same losses up to float summation order. Text frozen: no dropout."""
    import socket
    import subprocess
    import sys

    directory, _ = toy
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}

    def run(name: str, launcher: list[str], **optim) -> dict[int, float]:
        config = toy_train_config(directory, output_dir=str(tmp_path / name), stage={"text": {"mode": "frozen"}},
                                  optim={"lr": 1e-2, "batch_size": 8, "max_steps": 6, "max_grad_norm": None, **optim},
                                  log_every=1)
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
        result = subprocess.run([*launcher, "-m", "omnilm.cli.main", "train", str(tmp_path / f"{name}.yaml")],
                                env={**env, "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True, timeout=300,
                                check=False)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        return losses(tmp_path / name)

    one = run("one", [sys.executable], grad_accum=2)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    two = run("two", [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                      "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                      "--main_process_port", str(port)])
    from omnilm.training.checkpointing import latest_checkpoint

    state = json.loads((latest_checkpoint(tmp_path / "two") / "trainer_state.json").read_text())
    assert state["processes"] == 2 and state["global_batch"] == 16
    assert sorted(one) == sorted(two) == list(range(1, 7))
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-4, abs=1e-5), (step, one, two)
    assert one[6] < one[1]  # the comparison is over a run that learns
