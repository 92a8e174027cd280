"""Helpers shared by CLI commands: model loading, generation flags, media flags."""

from __future__ import annotations

import argparse
from typing import Any


def add_generation_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=256, help="most tokens to generate (default 256)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass when sampling")
    parser.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda or cpu (default: cpu)")


def generation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "seed": args.seed,
    }


def load_model(ref: str, device: str | None = None):
    """Load MODEL (checkpoint dir, hub id or pkg: reference) for a command."""
    import omnilm

    return omnilm.load(ref, device=device)


def load_dual_encoder(ref: str, device: str | None = None):
    """Load MODEL with `omnilm.load`, requiring a dual encoder (image search and embeddings need one)."""
    from pathlib import Path

    import omnilm
    from omnilm.checkpoint import is_checkpoint
    from omnilm.dual import DualEncoder
    from omnilm.errors import OmniError

    model = None if Path(ref).is_dir() and not is_checkpoint(ref) else omnilm.load(ref, device=device)
    if not isinstance(model, DualEncoder):
        raise OmniError(f"{ref} is not a dual-encoder checkpoint; `omnilm train configs/dual-easy-vqa.yaml` trains "
                        "one (pass its OUTPUT/final)")
    return model
