"""Exact resume after SIGKILL, a usable checkpoint after SIGTERM, and 2 processes matching 1.

Each run is a real `omnilm train` process (the kill must hit a process, and `accelerate launch` starts
its own), on a tiny model and a small generated image task.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omnilm.data.toy import build_shapes
from omnilm.training.checkpointing import latest_checkpoint

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny-image.yaml"
MAX_STEPS = 40


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return Path(build_shapes(tmp_path_factory.mktemp("shapes"), train=96, test=8, seed=2)["dir"])


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    sets = [f"output_dir={out}", f"data.train={data / 'train.jsonl'}", "data.eval=null",
            f"optim.max_steps={MAX_STEPS}", "optim.batch_size=8", "save_every=3", "keep_last=2", "log_every=1",
            f"feature_cache.dir={out}-features", "stage.llm.mode=lora", "stage.lora.dropout=0.1", *extra]
    return ["train", str(CONFIG), *[x for s in sets for x in ("--set", s)]]


def start(args: list[str], launcher: list[str] | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           **(env or {})}
    command = [*(launcher or [sys.executable]), "-m", "omnilm.cli.main", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, timeout: float = 240) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


def losses(out: Path) -> dict[int, float]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


def wait_for_step(process: subprocess.Popen, out: Path, step: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = out / "metrics.jsonl"
        if metrics.is_file() and max(losses(out), default=0) >= step:
            return
        assert process.poll() is None, process.communicate()[0][-3000:]
        time.sleep(0.02)
    raise AssertionError(f"training never reached step {step}")


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    finish(start(train_args(data, out)))
    return losses(out)


def test_sigkill_then_resume_reproduces_losses_exactly(data, reference, tmp_path):
    out = tmp_path / "run"
    process = start(train_args(data, out))
    wait_for_step(process, out, 8)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = max(losses(out))
    assert killed_at < MAX_STEPS, "the run ended before it could be killed"
    assert not (out / "final").exists()
    finish(start(train_args(data, out)))  # the same command resumes
    resumed = losses(out)
    assert sorted(resumed) == list(range(1, MAX_STEPS + 1))
    assert resumed == reference  # bit-identical on the CPU: weights, optimizer, schedule, RNG, data position


def test_sigterm_leaves_a_usable_checkpoint(data, tmp_path):
    import omnilm

    out = tmp_path / "run"
    process = start(train_args(data, out))
    wait_for_step(process, out, 4)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert "run the same command to resume" in output
    checkpoint = latest_checkpoint(out)
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["step"] == max(losses(out)) < MAX_STEPS  # saved at the step it stopped, not an older one
    lm = omnilm.load(str(checkpoint / "model"))
    image = str(data / "images" / "test-0.png")
    assert isinstance(lm.generate("<image>\nwhat color is the shape?", images=[image], max_new_tokens=3), str)
    assert not list(checkpoint.parent.glob(".*tmp*"))  # no half-written checkpoint left behind


def test_two_processes_match_one_with_the_same_global_batch(data, tmp_path):
    """Same recipe and global batch (1 × 8 vs 2 × 4): the same losses up to float summation order.

    Dropout off: each process draws its own masks, so only the dropout-free maths can agree."""
    settings = ("stage.lora.dropout=0.0", "optim.max_steps=12")
    finish(start(train_args(data, tmp_path / "one", *settings)))
    one = losses(tmp_path / "one")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # `accelerate launch --cpu --num_processes 2` starts one process unless MPI is set up (accelerate 1.x);
    # its torchrun launcher with ACCELERATE_USE_CPU gives two CPU processes (gloo).
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(port)]
    process = start(train_args(data, tmp_path / "two", *settings, "optim.batch_size=4"), launcher,  # 2 × 4 = 8
                    env={"ACCELERATE_USE_CPU": "1"})
    finish(process)
    state = json.loads((latest_checkpoint(tmp_path / "two") / "trainer_state.json").read_text())
    assert state["processes"] == 2 and state["global_batch"] == 8
    two = losses(tmp_path / "two")
    assert sorted(two) == sorted(one) == list(range(1, 13))
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-3, abs=1e-5), (step, one, two)
    assert one[12] < one[1]  # the comparison is over a run that learns
    assert (tmp_path / "two" / "final" / "omnilm.json").is_file()
