"""`omnilm export MODEL OUT --to FORMAT`: write a model in another engine's layout (formats: omnilm.export.FORMATS)."""

from __future__ import annotations

import argparse

from omnilm.cli.common import add_command
from omnilm.export import FORMATS

QUANTIZED = ("gguf", "llama.cpp")  # the formats whose LLM is a GGUF of a chosen type

EXAMPLE = """example:
  omnilm export runs/llava-stage2 out/llava --to hf-llava   # then: vllm serve out/llava
  omnilm export runs/speech/model out/ultravox --to hf-ultravox
  omnilm export runs/quickstart/model out/x --to hf-llava --check   # can it? (no: pooled tokens, audio)
  omnilm export runs/quickstart/model runs/quickstart-q4 --to gguf --quant Q4_K_M
  omnilm chat runs/quickstart-q4            # a GGUF export loads with the llama.cpp engine
  omnilm export runs/clip-llava out/llamacpp --to llama.cpp --quant Q8_0
                                            # then: llama-mtmd-cli -m out/llamacpp/model.gguf --mmproj out/llamacpp/mmproj.gguf"""


def register(subparsers) -> None:
    formats = "\n".join(f"  {name:<12} {spec.help}" for name, spec in FORMATS.items())
    parser = add_command(
        subparsers, "export", run, help="write a model for transformers, vLLM or llama.cpp", epilog=EXAMPLE,
        description=f"Write MODEL to OUT in another engine's own layout. A part the format cannot express is "
        f"refused before anything is written, naming the part and what would make it exportable.\n"
        f"formats:\n{formats}")
    parser.add_argument("model", help="checkpoint directory, hub id or pkg: reference")
    parser.add_argument("out", help="directory to write (replaced atomically)")
    parser.add_argument("--to", required=True, choices=sorted(FORMATS), metavar="FORMAT",
                        help=f"one of {', '.join(FORMATS)}")
    parser.add_argument("--check", action="store_true", help="only say whether MODEL can be exported")
    parser.add_argument("--lora", choices=("merged", "adapter"), default=None,
                        help="gguf: LoRA merged into the LLM before quantization (default), or kept as a llama.cpp "
                             "adapter GGUF (f16) over the unmerged quantized base")
    parser.add_argument("--quant", default=None,
                        help="gguf and llama.cpp: F16, BF16, F32, Q8_0, Q6_K, Q5_K_M, Q5_K_S, Q4_K_M (default), Q4_K_S, Q4_0, ...")


def run(args: argparse.Namespace) -> int:
    import omnilm
    from omnilm.export import ExportError, check, export

    options = {}
    if args.quant is not None:
        if args.to not in QUANTIZED:
            raise ExportError(f"--quant is an option of --to {' and --to '.join(QUANTIZED)}, not of --to {args.to}")
        from omnilm.llamacpp.convert import check_quant

        options["quant"] = check_quant(args.quant)  # before the (slow) model load
    if args.lora is not None:
        if args.to != "gguf":
            raise ExportError(f"--lora is an option of --to gguf, not of --to {args.to}")
        options["lora"] = args.lora
    lm = omnilm.load(args.model, engine="torch")
    if args.check:
        problems = check(lm, to=args.to)
        if problems:
            raise ExportError(f"cannot export {args.model} to {args.to}:\n" + "\n".join(f"  - {p}" for p in problems))
        print(f"{args.model} can be exported to {args.to}")
        return 0
    export(lm, args.out, to=args.to, **options)
    print(f"exported {args.model} to {args.out} ({args.to})")
    return 0
