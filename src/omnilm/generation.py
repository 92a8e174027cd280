"""The generation engine of `OmniLM.chat_batch`, `OmniLM.stream` and the server's batch scheduler.

`GenerationSettings`: what may be asked of generation, validated; omnilm's names (`temperature=0` is greedy)
and the transformers names people pass by habit (`do_sample`, `num_beams`, ...). `generate_batch` runs HF
`generate` once for a left-padded batch; after each step a stopping criterion streams each row's new text
to its sink and finishes the row on its own end-of-sequence, stop string, token budget or cancellation.
"""

from __future__ import annotations

import dataclasses
import difflib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from omnilm.configkit import check_fields, require
from omnilm.decoding import RowDecoding, RowLogits
from omnilm.errors import OmniError
from omnilm.grammar import Grammar

# A sink receives ("delta", text[, logprob entries]) · ("done", finish_reason, usage) · ("error", exc)
Sink = Callable[[tuple], None]
PER_ROW = {"logprobs": False, "top_logprobs": 0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
           "logit_bias": (), "grammar": None}  # shaped per row (omnilm.decoding): rows differing here share a batch


@dataclass(frozen=True)
class GenerationSettings:
    """How to generate one answer. None: the LLM's own generation_config decides."""

    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy; > 0 samples at this temperature
    top_p: float = 1.0  # nucleus mass, when sampling
    top_k: int | None = None  # when sampling
    stop: tuple[str, ...] = ()  # the answer ends before the first of these strings
    seed: int | None = None  # seeds torch before generating (sampling reproducible)
    num_beams: int = 1  # > 1: beam search (not with streaming)
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    min_new_tokens: int | None = None
    ignore_eos: bool = False  # never end at end-of-sequence: generate exactly max_new_tokens (benchmarks)
    use_cache: bool = True
    logprobs: bool = False  # record each generated token's log-probability (OpenAI's logprobs)
    top_logprobs: int = 0  # and the k most likely tokens at each step (0-20; needs logprobs)
    presence_penalty: float = 0.0  # OpenAI's: subtracted once from every token already generated (-2..2)
    frequency_penalty: float = 0.0  # OpenAI's: subtracted per earlier occurrence (-2..2)
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias -100..100) added to the logits
    grammar: Grammar | None = None  # the answer must match it (omnilm.grammar: JSON schema, JSON, Lark)

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        if isinstance(self.logit_bias, dict):
            object.__setattr__(self, "logit_bias", tuple(sorted(self.logit_bias.items())))
        check_fields(self, "generation")  # types, named: generation.temperature: expected a number, got 'hot'
        for name in ("max_new_tokens", "num_beams", "top_k"):
            value = getattr(self, name)
            require(value is None or value >= 1, f"generation.{name}", f"must be >= 1, got {value}")
        for name in ("temperature", "no_repeat_ngram_size", "min_new_tokens"):  # temperature 0: greedy
            value = getattr(self, name)
            require(value is None or value >= 0, f"generation.{name}", f"must be >= 0, got {value}")
        require(0 < self.top_p <= 1, "generation.top_p", f"must be in (0, 1], got {self.top_p}")
        require(self.repetition_penalty is None or self.repetition_penalty > 0, "generation.repetition_penalty",
                f"must be > 0, got {self.repetition_penalty}")
        require(all(self.stop), "generation.stop", "stop strings must not be empty")
        require(0 <= self.top_logprobs <= 20, "generation.top_logprobs", f"must be in 0..20, got {self.top_logprobs}")
        require(self.logprobs or not self.top_logprobs, "generation.top_logprobs", "needs logprobs=True")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            require(-2 <= value <= 2, f"generation.{name}", f"must be in -2..2, got {value}")
        for token, bias in self.logit_bias:
            require(token >= 0 and -100 <= bias <= 100, "generation.logit_bias",
                    f"token ids are >= 0 and biases in -100..100, got {token}: {bias}")
        shaped = [name for name, default in PER_ROW.items() if getattr(self, name) != default]
        require(self.num_beams == 1 or not shaped, "generation.num_beams",
                f"beam search cannot be combined with {', '.join(shaped)}; use num_beams=1")
        require(self.min_new_tokens is None or self.min_new_tokens <= self.max_new_tokens, "generation.min_new_tokens",
                f"{self.min_new_tokens} is more than max_new_tokens={self.max_new_tokens}; lower min_new_tokens or "
                "raise max_new_tokens")

    @classmethod
    def from_kwargs(cls, **gen: Any) -> GenerationSettings:
        """Settings from keyword arguments: omnilm's names, plus transformers' `do_sample` and `max_length`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(gen) - names - {"do_sample", "max_length"})
        if unknown:
            close = difflib.get_close_matches(unknown[0], [*names, "do_sample"], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise OmniError(f"unknown generation setting {unknown[0]!r}{hint}; omnilm takes "
                            f"{', '.join(sorted([*names, 'do_sample']))}")
        if "max_length" in gen:
            raise OmniError("max_length counts the prompt's tokens too; give max_new_tokens (the answer's length)")
        gen = {k: v for k, v in gen.items() if v is not None}  # None: the default
        do_sample = gen.pop("do_sample", None)
        require(do_sample is None or isinstance(do_sample, bool), "generation.do_sample",
                f"expected true or false, got {do_sample!r}")
        if do_sample and "temperature" not in gen:
            gen["temperature"] = 1.0
        settings = cls(**gen)
        if do_sample and not settings.sampling:
            raise OmniError(f"do_sample=True asks for sampling but temperature={settings.temperature} means greedy; "
                            "drop temperature (sampling then uses 1.0) or drop do_sample")
        if do_sample is False and settings.sampling:
            raise OmniError(f"do_sample=False asks for greedy decoding but temperature={settings.temperature} "
                            "samples; drop one of them (temperature=0 is greedy)")
        return settings

    @property
    def sampling(self) -> bool:
        return self.temperature > 0

    def as_kwargs(self) -> dict[str, Any]:
        """The settings as keyword arguments `from_kwargs` (and so `OmniLM.chat`) takes back."""
        return dataclasses.asdict(self)

    def sampling_key(self) -> GenerationSettings:
        """Settings with equal keys can share one `generate` call (budgets and stop strings are per row)."""
        unused = {} if self.sampling else {"top_p": 1.0, "top_k": None, "seed": None}  # greedy ignores these
        return dataclasses.replace(self, max_new_tokens=1, stop=(), **unused, **PER_ROW)

    def generation_config(self, *, eos_ids: list[int], pad_token_id: int | None, max_new_tokens: int | None = None):
        """The transformers GenerationConfig (None values are filled in from the LLM's generation_config)."""
        from transformers import GenerationConfig

        sampling = self.sampling
        return GenerationConfig(
            max_new_tokens=max_new_tokens or self.max_new_tokens,
            min_new_tokens=self.min_new_tokens,
            do_sample=sampling,
            temperature=self.temperature if sampling else None,
            top_p=self.top_p if sampling else None,
            top_k=self.top_k if sampling else None,
            num_beams=self.num_beams,
            repetition_penalty=self.repetition_penalty,
            no_repeat_ngram_size=self.no_repeat_ngram_size,
            eos_token_id=eos_ids,
            pad_token_id=pad_token_id,
            suppress_tokens=eos_ids if self.ignore_eos else None,  # never sample an end-of-sequence token
            use_cache=self.use_cache,
        )


@dataclass
class GenerationRequest:
    """One conversation to answer: its settings, where its text streams (optional), a flag to cancel it."""

    messages: Any  # omnilm messages or a Conversation
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    sink: Sink | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    choice: int = 0  # which of a request's n choices (seeded rows sample their own stream per choice)

    def send(self, event: tuple) -> None:
        """`event` to this request's sink, when it has one."""
        if self.sink is not None:
            self.sink(event)


def eos_token_ids(generation_config, tokenizer=None) -> set[int]:
    """The end-of-sequence ids of an LLM's generation config (one id, a list or none), and the tokenizer's."""
    eos = generation_config.eos_token_id
    extra = [tokenizer.eos_token_id] if tokenizer is not None else []
    return {*(eos if isinstance(eos, list) else [eos]), *extra} - {None}


@dataclass(frozen=True)
class PlainPrompt:
    """A prompt given to the LLM as it is, without the chat template (`/v1/completions`)."""

    text: str


def generate_batch(model, tokenizer, inputs: dict[str, torch.Tensor], requests: list[GenerationRequest]) -> list[str]:
    """Generate every request's answer in one `generate` call over `inputs` (their left-padded batch).

    The requests share their `sampling_key` (the first one's sampling settings are used); each has its own
    token budget and stop strings. Every sink gets its deltas and exactly one "done" or "error" event.
    Returns each answer's text; a generation error is sent to the unfinished rows' sinks and re-raised.
    """
    settings = requests[0].settings
    eos = eos_token_ids(model.llm.generation_config, tokenizer)
    try:
        rows = RowTracker(requests, tokenizer, eos, inputs["attention_mask"].sum(dim=1).tolist())
    except BaseException as err:  # a row's grammar could not start: no row has begun
        for request in requests:
            request.send(("error", err))
        raise
    shaping = [RowLogits(rows.rows)] if any(row.decoding is not None for row in rows.rows) else []
    try:
        config = settings.generation_config(eos_ids=sorted(eos), pad_token_id=tokenizer.pad_token_id,
                                            max_new_tokens=max(r.settings.max_new_tokens for r in requests))
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        with torch.no_grad():
            if settings.num_beams == 1:
                model.generate(**inputs, generation_config=config, stopping_criteria=[rows], logits_processor=shaping)
            else:  # beams are ranked at the end: read the winners through the rows afterwards
                config.stop_strings = list(settings.stop) or None
                new_tokens = model.generate(**inputs, generation_config=config, tokenizer=tokenizer)  # (B, N_new)
                for step in range(new_tokens.shape[1]):
                    if rows(new_tokens[:, : step + 1]).all():
                        break
    except BaseException as err:
        rows.fail(err)
        raise
    rows.finish_all("length")
    return [row.text for row in rows.rows]


class RowTracker:
    """A stopping criterion called by `generate` after each step: streams rows' new text, says which are done."""

    def __init__(self, requests: list[GenerationRequest], tokenizer, eos_ids: set[int], prompt_lengths: list[int]):
        self.rows = [Row(r, tokenizer, p) for r, p in zip(requests, prompt_lengths, strict=True)]
        self.eos_ids = eos_ids

    def __call__(self, input_ids: torch.LongTensor, scores: Any = None, **kwargs: Any) -> torch.BoolTensor:
        newest = input_ids[:, -1].tolist()  # (B,) the token each row got at this step
        for row, token in zip(self.rows, newest, strict=True):
            if not row.done:
                row.add(token, token in self.eos_ids)
        return torch.tensor([row.done for row in self.rows], dtype=torch.bool, device=input_ids.device)

    def finish_all(self, reason: str) -> None:
        for row in self.rows:
            if not row.done:
                row.finish(reason)

    def fail(self, err: BaseException) -> None:
        for row in self.rows:
            if not row.done:
                row.done = True
                row.emit(("error", err))


class Row:
    """One request's generated tokens, its text, and how much of that text has been sent."""

    def __init__(self, request: GenerationRequest, tokenizer, prompt_tokens: int) -> None:
        self.request, self.tokenizer, self.prompt_tokens = request, tokenizer, int(prompt_tokens)
        self.stop, self.max_new_tokens = request.settings.stop, request.settings.max_new_tokens
        self.tokens: list[int] = []
        self.text = ""  # the answer so far (at the end: the whole answer)
        self.sent = 0  # characters of it already streamed
        self.done = False
        self.hold = max((len(s) for s in self.stop), default=1) - 1  # a stop string may still be forming
        self.decoding = RowDecoding(request.settings, tokenizer) if RowDecoding.needed(request.settings) else None
        self.entries_sent = 0  # log-probability entries already streamed

    def add(self, token: int, is_eos: bool) -> None:
        if self.request.cancelled.is_set():
            self.finish("cancelled")
            return
        if is_eos and not self.request.settings.ignore_eos:
            self.finish("stop", count=1)
            return
        self.tokens.append(token)
        complete = self.decoding is not None and self.decoding.accept(token)  # the grammar allows only the end
        if complete:
            self.finish("stop")
            return
        if not self.stop and self.request.sink is None:  # nothing to cut or stream: decode once, at the end
            if len(self.tokens) >= self.max_new_tokens:
                self.finish("length")
            return
        text = self.decode()
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self._send(text[:cut])
            self.finish("stop", flush=False)
        elif len(self.tokens) >= self.max_new_tokens:
            self.finish("length")
        else:
            ready = len(text) - self.hold
            while ready > self.sent and text[ready - 1] == "\ufffd":  # an incomplete UTF-8 character
                ready -= 1
            self._send(text[:ready])

    def decode(self) -> str:
        return self.tokenizer.decode(self.tokens, skip_special_tokens=True)

    def emit(self, event: tuple) -> None:
        self.request.send(event)

    def _send(self, text: str, *, last: bool = False) -> None:
        entries = self.decoding.entries[self.entries_sent:] if self.decoding is not None else []
        if len(text) > self.sent or (last and entries):
            self.emit(("delta", text[self.sent:], entries) if entries else ("delta", text[self.sent:]))
            self.sent, self.entries_sent = len(text), self.entries_sent + len(entries)
        self.text = text

    def finish(self, reason: str, count: int = 0, *, flush: bool = True) -> None:
        """End the row; `flush` sends text held back for stop strings; `count` adds an EOS to usage."""
        if flush and reason != "cancelled":
            self._send(self.decode(), last=True)
        elif reason != "cancelled":
            self._send(self.text, last=True)
        self.done = True
        self.emit(("done", reason, usage(self.prompt_tokens, len(self.tokens) + count)))


def usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
