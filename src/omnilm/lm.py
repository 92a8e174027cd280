"""OmniLM: a model and its processor, with generate / chat / chat_batch / stream, save and load."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from omnilm.chat import Conversation, normalize_conversation
from omnilm.checkpoint import OMNI_KIND, checkpoint_kind, is_checkpoint, load_checkpoint, save_checkpoint
from omnilm.config import LLMConfig, OmniConfig
from omnilm.errors import OmniError
from omnilm.generation import GenerationRequest, GenerationSettings, PlainPrompt, generate_batch
from omnilm.model import OmniModel
from omnilm.processor import OmniProcessor
from omnilm.sources import resolve_source


class OmniLM:
    """The user-facing model: `lm.chat(messages)`, `lm.generate(prompt, images=[...])`, `lm.stream(...)`."""

    engine = "torch"  # which runtime runs the LLM (omnilm.llamacpp.LlamaCppLM: "llama.cpp")

    def __init__(self, model: OmniModel, processor: OmniProcessor, *, name: str | None = None) -> None:
        self.model = model.eval()
        self.processor = processor
        self.name = name or model.config.llm.source

    # Construction -------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: OmniConfig, *, base_dir: str | Path | None = None, name: str | None = None) -> OmniLM:
        """Assemble an untrained model (fresh connectors) from the parts `config` names."""
        processor = OmniProcessor.from_config(config, base_dir)
        model = OmniModel.from_config(
            config, layout=processor.layout, placeholder_ids=processor.placeholder_ids, base_dir=base_dir
        )
        return cls(model, processor, name=name)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> OmniLM:
        model, processor = load_checkpoint(directory)
        return cls(model, processor, name=Path(directory).name)

    def save(self, directory: str | Path, *, full: bool = False) -> Path:
        return save_checkpoint(self.model, self.processor, directory, full=full)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> OmniLM:
        for module in (self.model, self.processor.transcriber):
            if module is not None:
                module.to(device=device, dtype=dtype)
        return self

    @property
    def config(self) -> OmniConfig:
        return self.model.config

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.config.modalities

    # Generation ---------------------------------------------------------------------------------
    def generate(self, prompt: str, *, images=None, audios=None, videos=None, **gen: Any) -> str:
        """Answer a prompt holding `<image>`/`<audio>`/`<video>` placeholders, one per item given."""
        placeholders = self.processor.layout.placeholders
        return self.chat(normalize_conversation(prompt, placeholders, images=images, audios=audios, videos=videos),
                         **gen)

    def chat(self, messages: list[dict] | str, **gen: Any) -> str:
        """The assistant's reply to a conversation."""
        return self.chat_batch([messages], **gen)[0]

    def chat_batch(self, conversations: list, **gen: Any) -> list[str]:
        """Replies to several conversations, generated together (left-padded batch)."""
        settings = GenerationSettings.from_kwargs(**gen)
        return self.generate_requests([GenerationRequest(c, settings) for c in conversations])

    def generate_requests(self, requests: list[GenerationRequest]) -> list[str]:
        """Generate requests sharing a sampling key as one batch; each one's events stream to its sink (the engines'
        common entry for request-level batching; `cancelled` is honoured). Errors reach the sinks, then propagate."""
        try:
            inputs = self.prepare_inputs([r.messages for r in requests])
        except Exception as err:
            for request in requests:
                request.send(("error", err))
            raise
        return generate_batch(self.model, self.processor.tokenizer, inputs, requests)

    def stream(self, messages: list[dict] | str, **gen: Any) -> Iterator[str]:
        """Yield the reply in pieces as it is generated (joined, they are `chat`'s reply)."""
        settings = GenerationSettings.from_kwargs(**gen)
        if settings.num_beams > 1:
            raise OmniError("beam search (num_beams > 1) picks its answer only at the end, so it cannot stream; "
                            "use chat() or num_beams=1")
        events: queue.Queue[tuple] = queue.Queue()
        request = GenerationRequest(messages, settings, sink=events.put)

        def work() -> None:
            with contextlib.suppress(BaseException):  # errors reach the sink and are re-raised in the caller
                self.generate_requests([request])

        def pieces() -> Iterator[str]:
            thread = threading.Thread(target=work, daemon=True)
            thread.start()
            try:
                while (event := events.get())[0] == "delta":
                    yield event[1]
                if event[0] == "error":
                    raise event[1]
            finally:
                request.cancelled.set()  # the caller stopped early: end generation at the next step
                thread.join()

        return pieces()

    # Helpers ------------------------------------------------------------------------------------
    def prepare_inputs(self, conversations: list) -> dict[str, torch.Tensor]:
        """Model inputs for a batch of conversations (or of PlainPrompts: text only), on the model's device."""
        if all(isinstance(c, PlainPrompt) for c in conversations):
            inputs = self.processor.tokenizer([c.text for c in conversations], padding=True, padding_side="left",
                                              return_tensors="pt")
            return {k: inputs[k].to(self.model.device) for k in ("input_ids", "attention_mask")}
        placeholders = self.processor.layout.placeholders
        convs = [c if isinstance(c, Conversation) else normalize_conversation(c, placeholders) for c in conversations]
        inputs = self.processor(convs, add_generation_prompt=True, padding_side="left")
        return {k: v.to(self.model.device) for k, v in inputs.items()}


ENGINES = ("torch", "llama.cpp")


def load(ref: str | Path, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
         engine: str | None = None, **engine_options: Any):
    """Load an omnilm checkpoint (directory, hub id or pkg: reference), a transformers Llava (directory or hub id,
    converted once), or wrap a bare causal LLM.

    The `kind` in the checkpoint's omnilm.json decides what comes back: an OmniLM (no kind: every
    OmniConfig checkpoint) or a `omnilm.dual.DualEncoder` (`"kind": "dual_encoder"`).
    `engine`: "torch", or "llama.cpp" (the LLM in llama.cpp; `engine_options`: quant, n_ctx, n_seq, n_threads).
    None picks llama.cpp for a directory written by `omnilm export --to gguf`, else torch.
    """
    from omnilm.export.from_llava import llava_directory, load_llava
    from omnilm.llamacpp.loading import is_exported

    ref = str(ref)
    if engine is not None and engine not in ENGINES:
        raise OmniError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    source = resolve_source(ref)
    exported = Path(source).is_dir() and is_exported(source)
    if engine == "llama.cpp" or (engine is None and exported):
        return _load_llama_cpp(ref, source, exported, device=device, dtype=dtype, **engine_options)
    if exported:
        raise OmniError(f"{ref} is a GGUF export: its LLM exists only as GGUF, which the torch engine cannot run; "
                        "load it with engine='llama.cpp', or load the model it was exported from")
    if engine_options:
        raise OmniError(f"{', '.join(sorted(engine_options))}: options of the llama.cpp engine, not of torch")
    directory = source if Path(source).is_dir() and is_checkpoint(source) else _hub_checkpoint(source)
    llava = None if directory is not None else llava_directory(source)
    if llava is not None:  # a transformers Llava: converted once into an omnilm checkpoint
        lm = load_llava(llava)
    elif directory is None:
        lm = OmniLM.from_config(OmniConfig(llm=LLMConfig(source=ref)), name=ref)
    elif checkpoint_kind(directory) == OMNI_KIND:
        lm = OmniLM.from_pretrained(directory)
    else:
        from omnilm.dual import DualEncoder

        lm = DualEncoder.from_pretrained(directory)  # refuses a kind it does not know, naming it
    lm.name = ref
    return lm.to(device=device, dtype=dtype)


def _load_llama_cpp(ref: str, source: str, exported: bool, *, device, dtype, quant: str | None = None,
                    **options: Any):
    """The llama.cpp engine on an exported directory, or on a model exported once into the cache (`quant`)."""
    from omnilm.llamacpp.loading import load_exported
    from omnilm.llamacpp.native import require_llama_cpp

    require_llama_cpp()
    if dtype is not None:
        raise OmniError("dtype: the llama.cpp engine's LLM precision is its GGUF's quantization; pass quant= instead")
    if not exported:
        from omnilm.export.gguf import cached_export

        source = str(cached_export(ref, quant=quant or "Q8_0"))
    elif quant is not None:
        raise OmniError(f"{ref} is already exported; quant= applies when exporting (omnilm export --quant)")
    return load_exported(source, device=device, name=ref, **options)


def _hub_checkpoint(source: str) -> str | None:
    """Local snapshot of a hub repo that holds an omnilm checkpoint, or None (plain LLM or offline)."""
    if Path(source).exists() or source.count("/") != 1:
        return None
    try:
        from huggingface_hub import hf_hub_download, snapshot_download

        hf_hub_download(source, "omnilm.json")
        return snapshot_download(source)
    except Exception:  # not a checkpoint repo, or the hub is unreachable: treat `source` as an LLM
        return None
