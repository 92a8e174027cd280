"""Helpers shared by CLI commands: the command parser, generation flags, flags → dataclass fields."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import omnilm
from omnilm.checkpoint import is_checkpoint
from omnilm.dual import DualEncoder
from omnilm.errors import OmniError
from omnilm.generation import GenerationSettings


def add_command(subparsers, name: str, run, *, help: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """The parser of command `name`, running `run(args)`; its epilog (the examples) is shown as written."""
    parser = subparsers.add_parser(name, help=help, description=description, epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(func=run)
    return parser


def add_generation_flags(parser: argparse.ArgumentParser) -> None:
    default = GenerationSettings()
    parser.add_argument("--max-new-tokens", type=int, default=default.max_new_tokens,
                        help=f"most tokens to generate (default {default.max_new_tokens})")
    parser.add_argument("--temperature", type=float, default=default.temperature,
                        help="0 = greedy (default); > 0 samples")
    parser.add_argument("--top-p", type=float, default=default.top_p, help="nucleus sampling mass when sampling")
    parser.add_argument("--top-k", type=int, default=None, help="sample from the k likeliest tokens")
    parser.add_argument("--repetition-penalty", type=float, default=None, help="> 1 discourages repeating tokens")
    parser.add_argument("--num-beams", type=int, default=1, help="beam search with this many beams (not streamed)")
    parser.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    parser.add_argument("--stop", action="append", default=None, help="end the answer at this string (repeatable)")
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda or cpu (default: cpu)")


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=("torch", "llama.cpp"), default=None,
                        help="LLM runtime (default: llama.cpp for a GGUF export, else torch); llama.cpp needs "
                        "the omnilm[llamacpp] extra")
    parser.add_argument("--quant", default=None, help="with --engine llama.cpp on a model not exported yet: the "
                        "GGUF quantization of the one-time export (default Q8_0; Q4_K_M: faster)")


def load_model(args: argparse.Namespace):
    """omnilm.load(args.model) on the device and engine the flags name (a command without them: the defaults)."""
    quant = getattr(args, "quant", None)
    options = {"quant": quant} if quant else {}
    return omnilm.load(args.model, device=args.device, engine=getattr(args, "engine", None), **options)


def fields_from_args(cls: type, args: argparse.Namespace) -> dict:
    """The flags of `args` named like a field of dataclass `cls`, as keyword arguments for it."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}


def generation_settings(args: argparse.Namespace) -> GenerationSettings:
    """The validated generation settings from the flags (checked before the slow model load)."""
    return GenerationSettings.from_kwargs(**fields_from_args(GenerationSettings, args))


def load_dual_encoder(ref: str, device: str | None = None) -> DualEncoder:
    """Load MODEL with `omnilm.load`, requiring a dual encoder (image search and embeddings need one)."""
    model = None if Path(ref).is_dir() and not is_checkpoint(ref) else omnilm.load(ref, device=device)
    if not isinstance(model, DualEncoder):
        raise OmniError(f"{ref} is not a dual-encoder checkpoint; `omnilm train configs/dual-easy-vqa.yaml` trains "
                        "one (pass its OUTPUT/final)")
    return model
