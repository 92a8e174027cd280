"""LlamaCppLM: OmniLM's API with the LLM in llama.cpp and the media parts in PyTorch.

Each request is tokenized by omnilm's processor and its media encoded by omnilm's encoders and connectors;
the features go into llama.cpp as embeddings. Up to `n_seq` requests decode together, one llama.cpp
sequence each, and a request joins as soon as a sequence is free (omnilm.llamacpp.stepping); text streams,
stop strings and budgets go through the PyTorch path's `Row`. A sequence's KV cache stays after its answer,
so the next turn of that conversation decodes only what is new.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from omnilm.chat import Conversation, normalize_conversation
from omnilm.errors import OmniError
from omnilm.generation import GenerationRequest
from omnilm.llamacpp.native import Runtime
from omnilm.llamacpp.prompt import Prompt, build_prompts, shared_prefix
from omnilm.llamacpp.sampling import RowSampler, check_supported
from omnilm.lm import OmniLM

logger = logging.getLogger(__name__)


@dataclass
class _Slot:
    """What one llama.cpp sequence holds in the KV cache."""

    keys: list = field(default_factory=list)
    used: float = 0.0  # last use (monotonic), to evict the stalest first


class LlamaCppLM(OmniLM):
    """`chat`, `chat_batch`, `stream`, `generate` and `generate_requests` on a llama.cpp runtime."""

    engine = "llama.cpp"

    def __init__(self, model, processor, runtime: Runtime, *, eos_ids: set[int], name: str | None = None,
                 default_penalty: float | None = None) -> None:
        super().__init__(model, processor, name=name)
        self.runtime = runtime
        self.eos_ids = set(eos_ids) | ({processor.tokenizer.eos_token_id} - {None})
        self.default_penalty = default_penalty
        self._slots = [_Slot() for _ in range(runtime.n_seq)]
        self._lock = threading.RLock()  # one caller at a time owns the context (re-entered by its step batch)

    def save(self, directory, *, full: bool = False):
        raise OmniError("a llama.cpp model is already an exported directory: copy it, or save the PyTorch model "
                        "(omnilm.load(ref, engine='torch')) instead")

    def generate_requests(self, requests: list[GenerationRequest]) -> list[str]:
        """Generate every request (any mix of settings), streaming each one's events to its sink.

        Up to `n_seq` decode together; the others join as rows finish. A request that cannot be prepared (bad
        media, unsupported setting) gets its own error; the others go on. Returns each request's text ("" for
        one that failed)."""
        batch, waiting, rows = self.step_batch(), list(requests), {}
        with self._lock:
            try:
                while waiting or len(batch):
                    room = batch.max_rows - len(batch)
                    if waiting and room:  # they leave `waiting` once joined: a failure before is theirs to hear
                        rows.update({id(row.request): row for row in batch.join(waiting[:room])})
                        waiting = waiting[room:]
                    if len(batch):
                        batch.step()
            except BaseException as err:  # the running rows got it from the batch; the waiting ones get it here
                for request in waiting:
                    request.send(("error", err))
                raise
        return [rows[id(r)].text if id(r) in rows else "" for r in requests]

    def step_batch(self):
        """An empty running batch of this model's llama.cpp sequences (continuous batching)."""
        from omnilm.llamacpp.stepping import LlamaStepBatch

        return LlamaStepBatch(self)

    def chat_batch(self, conversations: list, **gen) -> list[str]:
        from omnilm.generation import GenerationSettings

        settings = GenerationSettings.from_kwargs(**gen)
        check_supported(settings)
        errors: list[BaseException] = []

        def keep_errors(event: tuple) -> None:
            if event[0] == "error":
                errors.append(event[1])

        texts = self.generate_requests([GenerationRequest(c, settings, sink=keep_errors) for c in conversations])
        if errors:
            raise errors[0]
        return texts

    def close(self) -> None:
        self.runtime.close()

    # Steps --------------------------------------------------------------------------------------
    def _prompts(self, requests: list[GenerationRequest]) -> list[Prompt | None]:
        """Each request's prompt, encoded as one batch; a request that fails alone gets its error (and None)."""
        if not requests:
            return []
        placeholders = self.processor.layout.placeholders
        try:
            convs = [r.messages if isinstance(r.messages, Conversation) else
                     normalize_conversation(r.messages, placeholders) for r in requests]
            prompts = build_prompts(self.processor, self.model, convs)
        except Exception as err:  # noqa: BLE001 - find the bad one: the others must not fail with it
            if len(requests) > 1:
                return [p for r in requests for p in self._prompts([r])]
            requests[0].send(("error", err))
            return [None]
        out: list[Prompt | None] = []
        for request, prompt in zip(requests, prompts, strict=True):
            budget = request.settings.max_new_tokens
            if len(prompt) + budget > self.runtime.n_ctx:
                request.send(("error", OmniError(
                    f"the prompt ({len(prompt)} tokens) plus max_new_tokens ({budget}) exceed the llama.cpp context "
                    f"of {self.runtime.n_ctx}; lower max_new_tokens or load with a larger n_ctx")))
                prompt = None
            out.append(prompt)
        return out

    def _assign(self, prompts: list[Prompt], busy: set[int]) -> list[int]:
        """A sequence per prompt, none of the `busy` ones: the one whose cache shares the longest prefix with
        it, else the stalest."""
        free = set(range(len(self._slots))) - busy
        seqs = []
        for prompt in prompts:
            best = max(free, key=lambda s: (shared_prefix(self._slots[s].keys, prompt.keys), -self._slots[s].used))
            free.discard(best)
            seqs.append(best)
            self._slots[best].used = time.monotonic()
        return seqs

    def _make_room(self, prompts: list[Prompt], seqs: list[int], requests: list[GenerationRequest],
                   busy: set[int]) -> None:
        """Trim each row's sequence to the prefix it shares; evict idle sequences' caches until the rows fit (the
        `busy` ones, decoding, keep theirs and what they may still generate)."""
        need = 0
        for prompt, seq, request in zip(prompts, seqs, requests, strict=True):
            keep = min(shared_prefix(self._slots[seq].keys, prompt.keys), len(prompt) - 1)
            self.runtime.forget(seq, keep)
            self._slots[seq].keys = self._slots[seq].keys[:keep]
            need += len(prompt) - keep + request.settings.max_new_tokens
        mine = set(seqs) | busy
        others = sorted((s for s in range(len(self._slots)) if s not in mine), key=lambda s: self._slots[s].used)
        while sum(len(s.keys) for s in self._slots) + need > self.runtime.n_ctx and others:
            seq = others.pop(0)
            self.runtime.forget(seq)
            self._slots[seq].keys = []

    def _prefill(self, seqs: list[int], prompts: list[Prompt], samplers: list[RowSampler]) -> list[int]:
        """Decode what each prompt has beyond its sequence's cache, rows side by side; sample each first token.

        All positions but each row's last go first (text of several rows in one batch, media per row); then
        the rows' last positions in one batch whose logits give the first tokens."""
        bodies, finals = [], []
        for seq, prompt in zip(seqs, prompts, strict=True):
            tail = prompt.tail(len(self._slots[seq].keys))
            pos, seg = tail.pop()
            if len(seg) > 1:
                tail.append((pos, seg[:-1]))
            bodies.append(tail)
            finals.append((pos + len(seg) - 1, seg[-1:]))
            self._slots[seq].keys = list(prompt.keys)
        for k in range(max(len(b) for b in bodies)):
            text = [(seq, pos + j, t, False) for seq, body in zip(seqs, bodies, strict=True) if k < len(body)
                    for pos, seg in [body[k]] if isinstance(seg, list) for j, t in enumerate(seg)]
            if text:
                self.runtime.decode_tokens(text)
            for seq, body in zip(seqs, bodies, strict=True):
                if k < len(body) and not isinstance(body[k][1], list):
                    self.runtime.decode_embeddings(seq, body[k][0], body[k][1], logits_last=False)
        first: list[int | None] = [None] * len(seqs)
        for i, (seq, (pos, seg)) in enumerate(zip(seqs, finals, strict=True)):
            if not isinstance(seg, list):  # the prompt ends in media: its last feature alone, sampled at once
                self.runtime.decode_embeddings(seq, pos, seg, logits_last=True)
                first[i] = samplers[i].next(self.runtime, -1, 0)
        text_rows = [i for i, token in enumerate(first) if token is None]
        if text_rows:
            self.runtime.decode_tokens([(seqs[i], finals[i][0], finals[i][1][0], True) for i in text_rows])
            for j, i in enumerate(text_rows):
                first[i] = samplers[i].next(self.runtime, j, 0)
        return first

