"""`omnilm search INDEX "a red triangle" [--k 5] [--image P]`: text or example-image search."""

from __future__ import annotations

import argparse
import json

from omnilm.cli.common import add_command, load_dual_encoder
from omnilm.errors import OmniError

EXAMPLE = """example:
  omnilm search photos.index "a red triangle" --k 5
  omnilm search photos.index --image query.png --json"""


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "search", run, help="search an image index by text or by an example image", epilog=EXAMPLE,
        description="Print the K images of INDEX closest to QUERY (text) or to --image, best first, with "
        "their cosine similarity. The model is the one that built the index unless --model names another "
        "(which must be that same model).")
    parser.add_argument("index", help="index directory from `omnilm index`")
    parser.add_argument("query", nargs="?", help="text to search for")
    parser.add_argument("--image", help="search by this example image instead")
    parser.add_argument("--k", type=int, default=5, help="results to show (default 5)")
    parser.add_argument("--model", help="dual-encoder checkpoint (default: the one recorded in the index)")
    parser.add_argument("--exact", action="store_true", help="exact search even where an HNSW graph exists")
    parser.add_argument("--json", action="store_true", help="print JSON lines {path, score}")


def run(args: argparse.Namespace) -> int:
    from omnilm.dual.index import ImageIndex

    if (args.query is None) == (args.image is None):
        raise OmniError("give a text QUERY or --image PATH (one of them)")
    if args.k < 1:
        raise OmniError("--k must be >= 1")
    index = ImageIndex.open(args.index)
    model = load_dual_encoder(args.model or index.model_name)
    index.check_model(model)
    query = model.embed_texts([args.query]) if args.query is not None else model.embed_images([args.image])
    for hit in index.search_vectors(query, args.k, exact=args.exact)[0]:
        print(json.dumps({"path": hit.path, "score": round(hit.score, 4)}) if args.json else
              f"{hit.score:.4f}  {hit.path}")
    return 0
