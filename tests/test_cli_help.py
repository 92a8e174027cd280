"""Every command's help: the repo files it names exist, every example parses, and the cheap offline ones run."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from omnilm.cli.main import build_parser, main

REPO = Path(__file__).resolve().parents[1]
REPO_PATH = re.compile(r"(?<![\w/.-])((?:configs|docs|src|scripts|bench|tests)/[\w./-]*\w)")
CHEAP_FLAGS = {"--help", "--dry-run", "--tiny"}
CHEAP = {("models", "list"), ("data", "easy-vqa"), ("data", "easy-vqa-video")}  # offline, seconds, no cheap flag
# Why the other examples are only parsed, not run: (command, first argument or None for any) → reason.
NOT_RUN = {
    ("quickstart", None): "the 20-minute main job (tests/test_quickstart.py runs it on a tiny model)",
    ("new", None): "downloads the base parts from the hub",
    ("generate", None): "needs a trained model or the packaged Qwen weights (tests/test_cli.py runs a tiny one)",
    ("chat", None): "interactive, needs a trained model (tests/test_cli.py runs a tiny one)",
    ("serve", None): "a server that runs until stopped (tests/test_serve_cli.py)",
    ("eval", None): "needs a trained model, packaged weights or a running server",
    ("models", "pull"): "pip-installs the weights' packages (network)",
    ("data", "easy-vqa-spoken"): "speaks thousands of questions with espeak-ng (minutes)",
    ("data", "spoken"): "needs the easy-vqa example's output and speaks every question (minutes)",
    ("train", None): "trains packaged models (minutes)",
    ("index", None): "needs a trained dual encoder and a photo folder",
    ("search", None): "needs an index built by `omnilm index`",
    ("export", None): "needs a trained model (tests/test_export_llava.py and tests/test_llamacpp_cli.py export tiny ones)",
}


def commands() -> dict[str, argparse.ArgumentParser]:
    """Every registered command's parser, by name."""
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subparsers.choices)


def examples(command: str) -> list[list[str]]:
    """The `omnilm ...` lines of a command's help, as argv lists (comments dropped)."""
    parser = commands()[command]
    lines = f"{parser.description or ''}\n{parser.epilog or ''}".splitlines()
    return [shlex.split(line, comments=True)[1:] for line in lines if line.strip().startswith("omnilm ")]


def reason_not_run(argv: list[str]) -> str | None:
    command, first = argv[0], next((a for a in argv[1:] if not a.startswith("-")), None)
    if CHEAP_FLAGS & set(argv) or (command, first) in CHEAP:
        return None
    reason = NOT_RUN.get((command, first)) or NOT_RUN.get((command, None))
    assert reason, f"`omnilm {shlex.join(argv)}`: add it to CHEAP or say in NOT_RUN why it cannot run offline"
    return reason


@pytest.mark.parametrize("command", sorted(commands()))
def test_help_names_only_files_that_exist_and_has_examples(command):
    parser = commands()[command]
    text = f"{parser.description or ''}\n{parser.epilog or ''}\n" + "\n".join(a.help or "" for a in parser._actions)
    missing = [path for path in REPO_PATH.findall(text) if not (REPO / path).exists()]
    assert not missing, f"omnilm {command} --help names files that do not exist: {missing}"
    assert re.search(r"^examples?\b.*:$", parser.epilog or "", re.MULTILINE), f"omnilm {command} has no example"
    assert examples(command), f"omnilm {command}: no `omnilm {command} ...` example line"


@pytest.mark.parametrize("command", sorted(commands()))
def test_every_example_parses_and_the_offline_ones_run(command, tmp_path, monkeypatch, capsys):
    for name in ("configs", "docs", "src"):  # examples run from a scratch copy of the repo's layout
        (tmp_path / name).symlink_to(REPO / name)
    monkeypatch.chdir(tmp_path)
    for argv in examples(command):  # an example line may show another command (index shows search)
        try:
            build_parser().parse_args(argv)
        except SystemExit as exit_:
            assert exit_.code == 0 and "--help" in argv, f"`omnilm {shlex.join(argv)}` does not parse"
        if reason_not_run(argv) is None:
            try:
                code = main(argv)
            except SystemExit as exit_:  # --help
                code = exit_.code
            assert code == 0, f"`omnilm {shlex.join(argv)}` failed:\n{capsys.readouterr().err}"
