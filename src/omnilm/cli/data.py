"""`omnilm data NAME OUT_DIR` — build a dataset on disk."""

from __future__ import annotations

import argparse

EXAMPLE = """examples:
  omnilm data easy-vqa data/easy-vqa                  # train + test, LLaVA-style JSONL + PNG images
  omnilm data easy-vqa data/easy-vqa --splits test --limit 500
  omnilm data easy-vqa-spoken data/easy-vqa-spoken    # questions spoken by espeak-ng (held-out voices)"""


def register(subparsers) -> None:
    from omnilm.data.builders import DATASETS

    parser = subparsers.add_parser(
        "data",
        help="build a dataset on disk (easy-vqa, spoken questions)",
        description="Build a dataset as JSONL records (LLaVA shape) plus media files under OUT_DIR.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", choices=sorted(DATASETS), help="dataset to build")
    parser.add_argument("out_dir", help="directory to write")
    parser.add_argument("--splits", nargs="+", default=None, help="splits to build (default: the builder's)")
    parser.add_argument("--limit", type=int, default=None, help="keep the first N questions per split")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from omnilm.data.builders import get_builder

    kwargs = {"limit": args.limit}
    if args.splits:
        kwargs["splits"] = tuple(args.splits)
    result = get_builder(args.name)(args.out_dir, **kwargs)
    for name, count in result["counts"].items():
        print(f"{result['files'][name]}: {count} records")
    return 0
