"""`omnilm index DIR --model REF --out INDEX`: embed every image under DIR for text and image search."""

from __future__ import annotations

import argparse

from omnilm.cli.common import add_command, load_dual_encoder

EXAMPLE = """example:
  omnilm index photos/ --model runs/dual/final --out photos.index
  omnilm index photos/ --model runs/dual/final --out photos.index   # again: only new/changed files
  omnilm search photos.index "a red triangle" --k 5"""


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "index", run, help="build or update an image-search index with a dual encoder", epilog=EXAMPLE,
        description="Embed every image under DIR (recursively) with a dual encoder into INDEX. Re-running "
        "embeds only new or changed files and drops deleted ones; an interrupted run leaves a usable index "
        "and the next run carries on. Unreadable images are skipped with a warning.")
    parser.add_argument("dir", help="folder of images (.png .jpg .jpeg .webp .bmp .gif .tif)")
    parser.add_argument("--model", required=True, help="dual-encoder checkpoint (from `omnilm train` of a dual-encoder config)")
    parser.add_argument("--out", required=True, help="index directory to create or update")
    parser.add_argument("--ann", default="auto", help="auto (HNSW from 20k images on) | exact | faiss")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    parser.add_argument("--rebuild", action="store_true", help="start over (another model or folder)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")


def run(args: argparse.Namespace) -> int:
    from omnilm.dual.index import build_index

    model = load_dual_encoder(args.model, args.device)
    report = build_index(args.dir, model, args.out, batch_size=args.batch_size, ann=args.ann, rebuild=args.rebuild)
    print(f"{args.out}: {report.total} images ({report.added} added, {report.updated} updated, "
          f"{report.removed} removed, {report.unchanged} unchanged, {len(report.skipped)} unreadable) "
          f"in {report.seconds:.1f} s; search: {report.backend}")
    return 0
