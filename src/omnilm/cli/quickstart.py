"""`omnilm quickstart`: the main job (`make demo`)."""

from __future__ import annotations

import argparse

EXAMPLE = """example:
  omnilm quickstart --out runs/quickstart"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "quickstart",
        help="the main job: build, run and save a multimodal model (what `make demo` runs)",
        description="Build a multimodal model, answer image, audio and video questions, save and reload it.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="runs/quickstart", help="output directory (default runs/quickstart)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from omnilm.demo import tiny_demo

    for line in tiny_demo(args.out):
        print(line)
    return 0
