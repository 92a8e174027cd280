"""`omnilm new CONFIG.yaml OUT_DIR`: assemble an untrained model from the parts a config names."""

from __future__ import annotations

import argparse

from omnilm.cli.common import add_command

EXAMPLE = """example:
  omnilm new configs/recipes/capstone-phi2.yaml runs/capstone-untrained   # base parts from the hub
  omnilm new configs/recipes/llava-1.5.yaml out --dry-run   # validate only, download nothing"""


def register(subparsers) -> None:
    parser = add_command(subparsers, "new", run, help="assemble an untrained model from a config", epilog=EXAMPLE,
                         description="Assemble a model (base parts from their sources, fresh connectors) and save it.")
    parser.add_argument("config", help="OmniConfig as YAML or JSON")
    parser.add_argument("out_dir", help="directory to write the checkpoint to")
    parser.add_argument("--dry-run", action="store_true", help="validate the config and stop")
    parser.add_argument("--full", action="store_true", help="store every base part too (a standalone checkpoint)")


def run(args: argparse.Namespace) -> int:
    from omnilm.config import OmniConfig
    from omnilm.preflight import preflight

    config = OmniConfig.from_file(args.config)
    report = preflight(config)  # raises before anything is downloaded
    if args.dry_run:
        print(f"{args.config}: valid ({', '.join(config.modalities) or 'text only'} → {config.llm.source})")
        for line in report:
            print(f"  {line}")
        return 0
    from omnilm.lm import OmniLM

    lm = OmniLM.from_config(config)
    lm.save(args.out_dir, full=args.full)
    print(f"saved an untrained model to {args.out_dir}")
    return 0
