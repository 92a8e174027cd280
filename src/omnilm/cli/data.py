"""`omnilm data NAME OUT_DIR` — build a dataset on disk."""

from __future__ import annotations

import argparse

from omnilm.cli.common import add_command
from omnilm.errors import OmniError

EXAMPLE = """examples:
  omnilm data easy-vqa data/easy-vqa                  # train + test, LLaVA-style JSONL + PNG images
  omnilm data easy-vqa data/easy-vqa --splits test --limit 500
  omnilm data easy-vqa-spoken data/easy-vqa-spoken    # questions spoken by espeak-ng (held-out voices)
  omnilm data easy-vqa-video data/easy-vqa-video --limit 20    # clips of shapes; order/count questions
  omnilm data spoken data/easy-vqa/train.jsonl data/spoken --copies 2 --augment   # any JSONL, human turns spoken
  omnilm data spoken data/easy-vqa/test.jsonl data/noisy --condition noise-10db     # a robustness test set"""


def register(subparsers) -> None:
    from omnilm.data.builders import DATASETS
    from omnilm.data.speech_conditions import CONDITIONS, FASTEST_TEMPO

    parser = add_command(subparsers, "data", run, help="build a dataset on disk (easy-vqa, spoken questions)",
                         description="Build a dataset as JSONL records (LLaVA shape) plus media files under OUT_DIR.",
                         epilog=EXAMPLE)
    parser.add_argument("name", choices=sorted([*DATASETS, "spoken"]), help="dataset to build")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="OUT_DIR (spoken: SRC.jsonl OUT_DIR)")
    parser.add_argument("--splits", nargs="+", default=None, help="splits to build (default: the builder's)")
    parser.add_argument("--limit", type=int, default=None, help="keep the first N questions per split (easy-vqa-video: N clips)")
    parser.add_argument("--split", choices=("train", "test"), default=None,
                        help="spoken: voice set (default: test when SRC's name has test/val/dev, else train)")
    parser.add_argument("--copies", type=int, default=1, help="spoken: versions of each record, each another voice")
    parser.add_argument("--augment", action="store_true",
                        help="spoken: vary each clip's background noise, level and tempo (training data)")
    parser.add_argument("--flite-share", type=float, default=0.0, metavar="P",
                        help="spoken --augment: share of the clips spoken by flite's training voices (slt, rms, awb)")
    parser.add_argument("--fastest", type=float, default=FASTEST_TEMPO, metavar="X",
                        help=f"spoken --augment: the fastest augmented tempo (default {FASTEST_TEMPO})")
    parser.add_argument("--condition", choices=sorted(CONDITIONS), default=None,
                        help="spoken: one test condition for every clip (noise, level, tempo, another synthesizer)")


def run(args: argparse.Namespace) -> int:
    from omnilm.data.builders import get_builder

    if args.name == "spoken":
        if len(args.paths) != 2:
            raise OmniError("usage: omnilm data spoken SRC.jsonl OUT_DIR")
        from omnilm.data.spoken import build_spoken

        try:
            result = build_spoken(*args.paths, split=args.split, copies=args.copies, limit=args.limit,
                                  augment=args.augment, condition=args.condition, flite_share=args.flite_share,
                                  fastest=args.fastest)
        except (RuntimeError, ValueError) as err:  # espeak-ng/flite missing or failing, a bad option: say so
            raise OmniError(str(err)) from None
    else:
        if len(args.paths) != 1:
            raise OmniError(f"usage: omnilm data {args.name} OUT_DIR")
        kwargs = {"limit": args.limit}
        if args.splits:
            kwargs["splits"] = tuple(args.splits)
        result = get_builder(args.name)(args.paths[0], **kwargs)
    for name, count in result["counts"].items():
        print(f"{result['files'][name]}: {count} records")
    return 0
