"""Entry point: `omnilm COMMAND ...`. Each command module registers its own parser."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from omnilm.errors import OmniError

# Command modules in help order; each has register(subparsers) and run(args) -> int. A command that keeps a
# log file sets the default `log_file`: a function of its args returning the path (or None).
COMMAND_MODULES = ("quickstart", "new", "generate", "chat", "serve", "train", "data", "eval", "export", "models",
                   "index", "search")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omnilm",
        description="Compose, train, evaluate and serve multimodal LLMs (image, audio, video → text).",
        epilog="Run `omnilm COMMAND --help` for each command's options and an example.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"omnilm.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    log_file = args.log_file(args) if getattr(args, "log_file", None) else None
    with logging_setup(verbose=args.verbose, log_file=log_file):
        try:
            return int(args.func(args) or 0)
        except OmniError as err:
            print(f"omnilm {args.command}: error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130


@contextlib.contextmanager
def logging_setup(*, verbose: bool, log_file: Path | None = None) -> Iterator[None]:
    """The one logging setup of every command, undone on exit.

    Console (stderr): warnings, and omnilm's own INFO lines unless the command keeps a log file, so progress
    bars and results are not drowned (accelerate alone writes five INFO lines per checkpoint); no FutureWarnings
    (deprecations between libraries). The log file: INFO of every library. ``--verbose``: DEBUG of everything,
    and every warning, on both.
    """
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if not verbose and log_file is None:
        console.addFilter(lambda record: record.levelno >= logging.WARNING or record.name.partition(".")[0] == "omnilm")
    elif not verbose:
        console.setLevel(logging.WARNING)
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
        handlers[-1].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        print(f"details are logged to {log_file}", file=sys.stderr)
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in handlers:
        root.addHandler(handler)
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not verbose:  # hide transformers' per-load weight bars and advisory warnings: omnilm shows its own progress
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            if not verbose:  # libraries' deprecation notices about each other (peft → transformers): not the user's
                warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
