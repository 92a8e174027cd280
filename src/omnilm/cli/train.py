"""`omnilm train CONFIG.yaml [--set a.b=c ...]`: train any stage of any model kind; resumes from the last checkpoint."""

from __future__ import annotations

import argparse
import json
import signal

from omnilm.cli.common import add_command

EXAMPLE = """examples:
  omnilm train configs/stage1-align.yaml
  omnilm train configs/stage2-lora.yaml --set optim.max_steps=200 --set stage.llm.lr=1e-4
  omnilm train configs/dual-easy-vqa.yaml    # a CLIP-style dual encoder (model.config kind: dual_encoder), LiT
  omnilm train configs/dual-easy-vqa.yaml --set stage.text.mode=frozen --set output_dir=runs/dual-frozen
  accelerate launch --multi_gpu --num_processes 2 -m omnilm.cli.main train configs/stage1-align.yaml
  ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m omnilm.cli.main train CONFIG  # 2 CPU procs

Running the same command again resumes from the newest checkpoint in output_dir (resume: never starts over).
SIGINT / SIGTERM finish the current step, save a checkpoint and exit (code 130 / 143)."""


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "train", run, epilog=EXAMPLE,
        help="train a model (any stage, LLM or dual encoder) from a YAML recipe",
        description="Train connectors, LoRA adapters or whole parts as a training config says. The model's kind "
        "picks the loss: an OmniConfig trains on chat records (token loss); a dual encoder (kind: dual_encoder) "
        "on image-caption pairs (symmetric InfoNCE; a locked image tower's features are cached). Writes "
        "OUTPUT/final (the model), OUTPUT/checkpoints, OUTPUT/metrics.jsonl and OUTPUT/loss.png.")
    parser.add_argument("config", help="training config (YAML), e.g. configs/stage1-align.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a config field (repeatable), e.g. --set optim.lr=2e-4")
    parser.add_argument("--dry-run", action="store_true", help="validate the config (not the data) and stop")


def run(args: argparse.Namespace) -> int:
    from omnilm.training.config import TrainConfig

    config = TrainConfig.from_file(args.config, args.overrides)
    if args.dry_run:
        print(config.to_yaml(), end="")
        return 0
    from omnilm.training import train

    result = train(config)
    if result.interrupted:
        print(f"stopped by {result.interrupted} at step {result.step}/{result.total_steps}; "
              f"run the same command to resume")
        return 128 + int(getattr(signal, result.interrupted))
    summary = f"trained {result.step} steps; model saved to {result.final_dir}"
    if result.eval and "eval_loss" in result.eval:
        summary += f" (eval loss {result.eval['eval_loss']:.4f})"
    print(summary)
    if result.eval and "eval_loss" not in result.eval:
        print(json.dumps(result.eval, indent=2))
    return 0
