"""`omnilm train-dual CONFIG.yaml [--set key.path=value ...]`: contrastive training of a dual encoder."""

from __future__ import annotations

import argparse
import json

EXAMPLE = """example (LiT: locked DINOv2 image tower, MiniLM text tower; easy-vqa captions):
  omnilm train-dual configs/dual_easy_vqa.yaml
  omnilm train-dual configs/dual_easy_vqa.yaml --set stage.text.mode=frozen --set output_dir=runs/dual-frozen

CONFIG.yaml:
  model:
    vision: {source: "pkg:dinov2-small", image_size: 56}
    text: {source: "pkg:minilm-l6"}
  train: easy-vqa:train      # or a JSONL of {"image": path, "caption": text}
  eval: easy-vqa:test
  output_dir: runs/dual
  stage: {vision: {mode: frozen}, text: {mode: full, lr: 2.0e-5}}
  epochs: 30"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train-dual",
        help="train a CLIP-style dual encoder (LiT or full)",
        description="Train projection heads and a temperature (and any tower the stage unlocks) with a "
        "symmetric InfoNCE loss. A frozen image tower is run once and its features cached. Writes "
        "OUTPUT/final (load with `omnilm index --model`), OUTPUT/metrics.json; rerunning resumes.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="training config (YAML)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set epochs=5 (repeatable)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from omnilm.dual.config import DualTrainConfig
    from omnilm.dual.train import train_dual

    result = train_dual(DualTrainConfig.from_file(args.config, args.set))
    if result.final_dir is None:
        print(f"stopped at step {result.step}/{result.total_steps}; run the same command to resume")
        return 130
    print(f"trained {result.step} steps; model: {result.final_dir}")
    if result.metrics:
        print(json.dumps(result.metrics, indent=2))
    return 0
