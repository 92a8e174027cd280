"""Open an exported GGUF directory as a LlamaCppLM, after checking that its parts belong together.

The directory (written by `omnilm.export.gguf.export_gguf`) holds `llamacpp.json` (the manifest below), the
LLM as GGUF, and an omnilm checkpoint of the media parts: omnilm.json, model.safetensors (connectors, video
embedding), `vision/` and `audio/` (base encoders) and the processor's files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from omnilm.checkpoint import CONFIG_FILE, load_weights
from omnilm.config import OmniConfig
from omnilm.configkit import coerce, require
from omnilm.errors import OmniError
from omnilm.model import OmniModel
from omnilm.processor import OmniProcessor

logger = logging.getLogger(__name__)

MANIFEST_FILE = "llamacpp.json"
DEFAULT_N_CTX = 8192  # KV cells shared by every sequence (Qwen2.5-0.5B: ~12 KB each in f16)
DEFAULT_N_SEQ = 16  # sequences decoded together (the server's batch)


@dataclass
class GGUFManifest:
    """What an exported directory holds and what its GGUF must be."""

    gguf: str  # the LLM's GGUF file, relative to the directory
    quant: str  # the GGUF's quantization (F16, Q8_0, Q4_K_M, ...)
    architecture: str  # general.architecture of the GGUF (e.g. qwen2)
    n_embd: int  # the LLM's width: the connectors' output width
    eos_token_ids: list[int]  # the LLM's end-of-sequence tokens (its generation_config)
    source: str  # the model it was exported from
    lora: str = "merged"  # merged: adapters folded in before quantization · else a llama.cpp adapter GGUF file
    repetition_penalty: float | None = None  # the LLM's generation_config default, when it has one
    format: int = 1
    extra: dict = field(default_factory=dict)  # versions and sizes, for people reading the file

    def validate(self, path: str = "manifest") -> None:
        require(self.n_embd > 0, f"{path}.n_embd", "must be positive")
        require(self.format == 1, f"{path}.format", f"format {self.format} is newer than this omnilm; upgrade omnilm")

    def write(self, directory: Path) -> None:
        (directory / MANIFEST_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, directory: Path) -> GGUFManifest:
        return coerce(cls, json.loads((directory / MANIFEST_FILE).read_text()), "", root=MANIFEST_FILE)


def is_exported(directory: str | Path) -> bool:
    return (Path(directory) / MANIFEST_FILE).is_file()


class WidthStandIn(nn.Module):
    """In place of the LLM (which runs in llama.cpp): its width, for the connectors, and an empty embedding."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(0, width)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def get_output_embeddings(self) -> None:
        return None


def load_exported(directory: str | Path, *, n_ctx: int = DEFAULT_N_CTX, n_seq: int = DEFAULT_N_SEQ,
                  n_threads: int | None = None, device: str | torch.device | None = None, name: str | None = None):
    """The LlamaCppLM of an exported directory; clear errors for a missing, truncated or mismatched GGUF."""
    from omnilm.llamacpp.engine import LlamaCppLM
    from omnilm.llamacpp.native import Runtime, gguf_facts, require_llama_cpp

    require_llama_cpp()
    directory = Path(directory)
    manifest = GGUFManifest.read(directory)
    gguf_path = directory / manifest.gguf
    facts = gguf_facts(gguf_path)
    if facts["architecture"] != manifest.architecture or facts["n_embd"] != manifest.n_embd:
        raise OmniError(f"{gguf_path} is a {facts['architecture']} LLM of width {facts['n_embd']}, but the media "
                        f"parts in {directory} were trained for a {manifest.architecture} LLM of width "
                        f"{manifest.n_embd}; export the model again (omnilm export MODEL OUT --to gguf)")
    config = OmniConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
    if config.fusion.mode != "embed":
        raise OmniError(f"fusion.mode={config.fusion.mode!r} attends to media inside the LLM's layers, which "
                        "llama.cpp cannot run; use engine='torch'")
    processor = OmniProcessor.from_pretrained(directory, config)
    model = OmniModel.from_config(config, layout=processor.layout, placeholder_ids=processor.placeholder_ids,
                                  base_dir=directory, llm=WidthStandIn(manifest.n_embd))
    load_weights(model, directory, set(model.head_state_dict()))
    lora = None if manifest.lora == "merged" else directory / manifest.lora
    runtime = Runtime(gguf_path, n_ctx=n_ctx, n_seq=n_seq, n_threads=n_threads, lora=lora)
    lm = LlamaCppLM(model, processor, runtime, eos_ids=set(manifest.eos_token_ids), name=name or directory.name,
                    default_penalty=manifest.repetition_penalty)
    logger.info("llama.cpp engine: %s (%s, %s), %d KV cells × up to %d sequences", gguf_path.name,
                manifest.architecture, manifest.quant, runtime.n_ctx, n_seq)
    return lm.to(device=device)
