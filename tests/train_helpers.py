"""Helpers shared by the training tests: run `omnilm train` in-process, score a model on held-out records."""

from __future__ import annotations

from pathlib import Path

from omnilm.cli.main import main
from omnilm.data.records import read_records

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def run_train(config: str, out: Path, *overrides: str) -> Path:
    """`omnilm train configs/CONFIG --set output_dir=OUT --set ...`; returns OUT."""
    args = ["train", str(CONFIGS / config), "--set", f"output_dir={out}"]
    for override in overrides:
        args += ["--set", override]
    assert main(args) == 0
    return out


def accuracy(model_dir: str | Path, test_file: str | Path) -> float:
    """Exact-match accuracy of greedy answers on the records of `test_file`."""
    import omnilm

    lm = omnilm.load(str(model_dir))
    records = read_records(test_file)
    answers = []
    for i in range(0, len(records), 50):
        answers += lm.chat_batch([r.prompt for r in records[i : i + 50]], max_new_tokens=6)
    return sum(a.strip() == r.answer for a, r in zip(answers, records)) / len(records)
