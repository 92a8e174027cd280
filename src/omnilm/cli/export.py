"""`omnilm export MODEL OUT --to FORMAT`: hand a model to another engine."""

from __future__ import annotations

import argparse

from omnilm.cli.common import add_command

EXAMPLE = """examples:
  omnilm export runs/quickstart/model runs/quickstart-q4 --to gguf --quant Q4_K_M
  omnilm chat runs/quickstart-q4            # a GGUF export loads with the llama.cpp engine

formats:
  gguf   the LLM as GGUF (LoRA merged; quantized with llama.cpp's quantizer) + the media parts (PyTorch),
         for omnilm's llama.cpp engine: every encoder and connector works (needs omnilm[llamacpp])"""
FORMATS = ("gguf",)


def register(subparsers) -> None:
    parser = add_command(subparsers, "export", run, help="export a model for another engine", epilog=EXAMPLE,
                         description="Write MODEL in the layout another engine loads.")
    parser.add_argument("model", help="checkpoint directory, hub id or pkg: reference")
    parser.add_argument("out", help="output directory (written atomically)")
    parser.add_argument("--to", required=True, choices=FORMATS, help="target format")
    parser.add_argument("--quant", default="Q4_K_M",
                        help="gguf: F16, BF16, F32, Q8_0, Q6_K, Q5_K_M, Q5_K_S, Q4_K_M (default), Q4_K_S, Q4_0, ...")


def run(args: argparse.Namespace) -> int:
    from omnilm.export.gguf import export_gguf
    from omnilm.llamacpp.convert import check_quant

    check_quant(args.quant)  # before the (slow) model load
    out = export_gguf(args.model, args.out, quant=args.quant)
    print(f"wrote {out} ({args.quant}); load it with omnilm.load({str(out)!r}) or `omnilm chat {out}`")
    return 0
