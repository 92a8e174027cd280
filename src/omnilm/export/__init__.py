"""`omnilm export`: hand a model to another engine (transformers, vLLM, llama.cpp) in that engine's own layout.

Each format is one entry of FORMATS: the module that implements it and a line of help. A format module has
`check(lm) -> list[str]` (every part the format cannot express, each with what would make it exportable;
empty when it can) and `write(lm, staging: Path, **options)` (the files, into a fresh directory; options such
as gguf's `quant`). `export` runs
`check` first, so a refused model writes nothing, then writes atomically: an interrupted export leaves no
half-written directory.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path

from omnilm.errors import OmniError
from omnilm.io import atomic_directory

logger = logging.getLogger(__name__)

SERVE_HINT = "or run every part as it is with `omnilm serve MODEL --engine llama.cpp`"


class ExportError(OmniError):
    """The model has a part the target format cannot express (named in the message, with what to do)."""


@dataclass(frozen=True)
class ExportFormat:
    module: str  # implements check(lm) and write(lm, staging)
    help: str


FORMATS: dict[str, ExportFormat] = {
    "hf-llava": ExportFormat("omnilm.export.hf_llava", "transformers LlavaForConditionalGeneration (vLLM serves it)"),
    "hf-ultravox": ExportFormat("omnilm.export.hf_ultravox", "Ultravox layout (Whisper + swiglu projector + LLM) "
                                                              "as vLLM's UltravoxModel loads it"),
    "gguf": ExportFormat("omnilm.export.gguf", "the LLM as GGUF (LoRA merged, llama.cpp's quantizer: --quant) + the "
                                               "media parts, for omnilm's llama.cpp engine (every part works)"),
    "llama.cpp": ExportFormat("omnilm.export.llama_cpp", "text GGUF + mmproj GGUF + Ollama Modelfile for stock "
                                                          "llama.cpp / Ollama (SigLIP + mlp, Whisper + swiglu)"),
}


def format_module(name: str):
    try:
        spec = FORMATS[name]
    except KeyError:
        raise ExportError(f"unknown export format {name!r}; choose one of {sorted(FORMATS)}") from None
    return importlib.import_module(spec.module)


def check(lm, *, to: str) -> list[str]:
    """The reasons `lm` cannot be exported to format `to` (empty: it can)."""
    return format_module(to).check(lm)


def export(model, out: str | Path, *, to: str, **options) -> Path:
    """Write `model` (an OmniLM, or a reference `omnilm.load` takes) to directory `out` in format `to`.

    Nothing is written when the format cannot express a part of the model: ExportError names each such part.
    The model is not modified (LoRA adapters are merged into the exported weights only).
    """
    module = format_module(to)
    if isinstance(model, (str, Path)):
        from omnilm.lm import load

        model = load(model, engine="torch")
    problems = module.check(model)
    if problems:
        raise ExportError(f"cannot export {model.name} to {to}:\n" + "\n".join(f"  - {p}" for p in problems))
    with atomic_directory(out) as staging:
        module.write(model, staging, **options)
    logger.info("exported %s to %s (%s)", model.name, out, to)
    return Path(out)
