"""OmniLM: a model and its processor, with generate / chat / chat_batch / stream, save and load."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from omnilm.chat import Conversation, normalize_conversation
from omnilm.checkpoint import OMNI_KIND, checkpoint_kind, is_checkpoint, load_checkpoint, save_checkpoint
from omnilm.config import LLMConfig, OmniConfig
from omnilm.model import OmniModel
from omnilm.processor import OmniProcessor
from omnilm.sources import resolve_source

logger = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 256


class OmniLM:
    """The user-facing model: `lm.chat(messages)`, `lm.generate(prompt, images=[...])`, `lm.stream(...)`."""

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
        self.model.to(device=device, dtype=dtype)
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
        conversation = [{"role": "user", "content": prompt}]
        conv = normalize_conversation(
            conversation, self.processor.layout.placeholders, images=images, audios=audios, videos=videos
        )
        return self.chat_batch([conv], **gen)[0]

    def chat(self, messages: list[dict] | str, **gen: Any) -> str:
        """The assistant's reply to a conversation."""
        return self.chat_batch([messages], **gen)[0]

    @torch.no_grad()
    def chat_batch(self, conversations: list, **gen: Any) -> list[str]:
        """Replies to several conversations, generated together (left-padded batch)."""
        inputs = self.prepare_inputs(conversations)
        kwargs, stop = self.generation_kwargs(**gen)
        new_tokens = self.model.generate(**inputs, **kwargs)  # (B, N_new)
        return [_cut_at_stop(self.processor.decode(row), stop) for row in new_tokens]

    def stream(self, messages: list[dict] | str, **gen: Any) -> Iterator[str]:
        """Yield the reply in pieces as it is generated."""
        from transformers import TextIteratorStreamer

        inputs = self.prepare_inputs([messages])
        kwargs, stop = self.generation_kwargs(**gen)
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                with torch.no_grad():
                    self.model.generate(**inputs, **kwargs, streamer=streamer)
            except BaseException as err:  # re-raised in the caller's thread
                errors.append(err)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        yield from _stream_until_stop(streamer, stop)
        thread.join()
        if errors:
            raise errors[0]

    # Helpers ------------------------------------------------------------------------------------
    def prepare_inputs(self, conversations: list) -> dict[str, torch.Tensor]:
        """Model inputs for a batch of conversations (transcribing audio first in transcribe mode)."""
        placeholders = self.processor.layout.placeholders
        convs = [c if isinstance(c, Conversation) else normalize_conversation(c, placeholders) for c in conversations]
        if self.model.transcriber is not None:
            convs = self._transcribe(convs)
        inputs = self.processor(convs, add_generation_prompt=True, padding_side="left")
        return {k: v.to(self.model.device) for k, v in inputs.items()}

    def _transcribe(self, convs: list[Conversation]) -> list[Conversation]:
        """Replace each audio item by its Whisper transcript (audio.mode: transcribe): one batch for all clips."""
        from omnilm.media import load_audio

        clips = [load_audio(item, max_seconds=30.0) for conv in convs for m, item in conv.media if m == "audio"]
        if not clips:
            return convs
        texts = iter(self.model.transcriber.transcribe(clips))
        marker = self.processor.layout.placeholders["audio"]
        out = []
        for conv in convs:
            messages = []
            for message in conv.messages:  # clips are in order of appearance, as the markers are
                parts = message["content"].split(marker)
                content = parts[0] + "".join(next(texts) + rest for rest in parts[1:])
                messages.append({"role": message["role"], "content": content})
            out.append(Conversation(messages, [(m, item) for m, item in conv.media if m != "audio"]))
        return out

    def generation_kwargs(
        self,
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | str | None = None,
        seed: int | None = None,
        use_cache: bool = True,
        **extra: Any,
    ) -> tuple[dict[str, Any], list[str]]:
        """Keyword arguments for `OmniModel.generate` from the user's settings, and the stop strings."""
        from transformers import GenerationConfig

        tokenizer = self.processor.tokenizer
        stop = [stop] if isinstance(stop, str) else list(stop or [])
        eos = self.model.llm.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        eos.add(tokenizer.eos_token_id)
        sampling = temperature > 0
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=sampling,
            temperature=temperature if sampling else None,
            top_p=top_p if sampling else None,
            top_k=None,
            eos_token_id=sorted(i for i in eos if i is not None),
            pad_token_id=tokenizer.pad_token_id,
            use_cache=use_cache,
            stop_strings=stop or None,
            **extra,
        )
        if seed is not None:
            torch.manual_seed(seed)
        kwargs: dict[str, Any] = {"generation_config": config}
        if stop:
            kwargs["tokenizer"] = tokenizer
        return kwargs, stop


def _cut_at_stop(text: str, stop: list[str]) -> str:
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


def _stream_until_stop(pieces: Iterator[str], stop: list[str]) -> Iterator[str]:
    """Pass pieces through, holding back text that might start a stop string; end at a stop string."""
    if not stop:
        for piece in pieces:
            if piece:
                yield piece
        return
    hold = max(len(s) for s in stop) - 1
    buffer, stopped = "", False
    for piece in pieces:
        if stopped:
            continue  # drain the streamer so the generating thread can finish
        buffer += piece
        cut = _cut_at_stop(buffer, stop)
        if len(cut) < len(buffer):
            if cut:
                yield cut
            stopped = True
            continue
        if len(buffer) > hold:
            yield buffer[: len(buffer) - hold]
            buffer = buffer[len(buffer) - hold :]
    if not stopped and buffer:
        yield buffer


def load(ref: str | Path, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None):
    """Load an omnilm checkpoint (directory, hub id or pkg: reference), or wrap a bare causal LLM.

    The `kind` in the checkpoint's omnilm.json decides what comes back: an OmniLM (no kind: every
    OmniConfig checkpoint) or a `omnilm.dual.DualEncoder` (`"kind": "dual_encoder"`).
    """
    ref = str(ref)
    source = resolve_source(ref)
    directory = source if Path(source).is_dir() and is_checkpoint(source) else _hub_checkpoint(source)
    if directory is None:
        lm = OmniLM.from_config(OmniConfig(llm=LLMConfig(source=ref)), name=ref)
    elif checkpoint_kind(directory) == OMNI_KIND:
        lm = OmniLM.from_pretrained(directory)
    else:
        from omnilm.dual import DualEncoder

        lm = DualEncoder.from_pretrained(directory)  # refuses a kind it does not know, naming it
    lm.name = ref
    return lm.to(device=device, dtype=dtype)


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
