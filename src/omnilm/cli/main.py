"""Entry point: `omnilm COMMAND ...`. Each command module registers its own parser."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from omnilm.errors import OmniError

# Command modules in help order; each has register(subparsers) and run(args) -> int.
COMMAND_MODULES = ("quickstart", "new", "generate", "chat", "serve", "train", "data", "eval", "models", "index",
                   "search")


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
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args.verbose:
        _quiet_transformers()
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except OmniError as err:
        print(f"omnilm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _quiet_transformers() -> None:
    """Hide transformers' per-load weight bars and advisory warnings; omnilm shows its own progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())
