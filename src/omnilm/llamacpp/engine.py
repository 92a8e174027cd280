"""LlamaCppLM: OmniLM's API with the LLM in llama.cpp and the media parts in PyTorch.

Each request is tokenized by omnilm's processor and its media encoded by omnilm's encoders and connectors;
the features go into llama.cpp as embeddings. Up to `n_seq` requests decode together, one llama.cpp
sequence each; text streams, stop strings and budgets go through the PyTorch path's `RowTracker`. A
sequence's KV cache stays after its answer, so the next turn of that conversation decodes only what is new.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from omnilm.chat import Conversation, normalize_conversation
from omnilm.errors import OmniError
from omnilm.generation import GenerationRequest, RowTracker
from omnilm.llamacpp.native import Runtime
from omnilm.llamacpp.prompt import Prompt, build_prompt, shared_prefix
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
        self._lock = threading.Lock()  # one generation at a time owns the context

    def save(self, directory, *, full: bool = False):
        raise OmniError("a llama.cpp model is already an exported directory: copy it, or save the PyTorch model "
                        "(omnilm.load(ref, engine='torch')) instead")

    def generate_requests(self, requests: list[GenerationRequest]) -> list[str]:
        """Generate every request (any mix of settings), streaming each one's events to its sink.

        A request that cannot be prepared (bad media, unsupported setting) gets its own error; the others go on.
        Returns each request's text ("" for one that failed)."""
        with self._lock:
            prepared = []
            for request in requests:
                try:
                    prepared.append((request, self._prepare(request)))
                except Exception as err:  # noqa: BLE001 - reported to this request only
                    _send(request, ("error", err))
            texts = {}
            for start in range(0, len(prepared), self.runtime.n_seq):
                chunk = prepared[start:start + self.runtime.n_seq]
                for (request, _), text in zip(chunk, self._generate(chunk), strict=True):
                    texts[id(request)] = text
            return [texts.get(id(r), "") for r in requests]

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
    def _prepare(self, request: GenerationRequest) -> Prompt:
        """The request's prompt, once its settings are known to be supported and it fits the context."""
        check_supported(request.settings)
        placeholders = self.processor.layout.placeholders
        messages = request.messages
        conv = messages if isinstance(messages, Conversation) else normalize_conversation(messages, placeholders)
        prompt = build_prompt(self.processor, self.model, conv)
        budget = request.settings.max_new_tokens
        if len(prompt) + budget > self.runtime.n_ctx:
            raise OmniError(f"the prompt ({len(prompt)} tokens) plus max_new_tokens ({budget}) exceed the llama.cpp "
                            f"context of {self.runtime.n_ctx}; lower max_new_tokens or load with a larger n_ctx")
        return prompt

    def _generate(self, chunk: list[tuple[GenerationRequest, Prompt]]) -> list[str]:
        requests = [r for r, _ in chunk]
        prompts = [p for _, p in chunk]
        rows = RowTracker(requests, self.processor.tokenizer, self.eos_ids, [len(p) for p in prompts])
        seqs = self._assign(prompts)
        samplers = []
        try:
            self._make_room(prompts, seqs, requests)
            for request, prompt in chunk:
                samplers.append(RowSampler(self.runtime.lc, request.settings, n_vocab=self.runtime.n_vocab,
                                           eos_ids=self.eos_ids, prompt_tokens=prompt.text_tokens,
                                           default_penalty=self.default_penalty))
            last = []  # each row's newest token (not yet in the KV cache)
            for i, (seq, prompt) in enumerate(zip(seqs, prompts, strict=True)):
                self._prefill(seq, prompt)
                last.append(samplers[i].next(self.runtime, -1, 0))
                rows.rows[i].add(last[i], last[i] in self.eos_ids)
            while True:
                live = [i for i, row in enumerate(rows.rows) if not row.done]
                for i in live:
                    if requests[i].cancelled.is_set():
                        rows.rows[i].finish("cancelled")
                live = [i for i in live if not rows.rows[i].done]
                if not live:
                    break
                batch = [(seqs[i], len(self._slots[seqs[i]].keys), last[i], True) for i in live]
                self.runtime.decode_tokens(batch)
                for j, i in enumerate(live):
                    self._slots[seqs[i]].keys.append(last[i])
                    last[i] = samplers[i].next(self.runtime, j, len(rows.rows[i].tokens))
                    rows.rows[i].add(last[i], last[i] in self.eos_ids)
        except BaseException as err:
            for seq in seqs:  # their cache state is unknown now
                self.runtime.forget(seq)
                self._slots[seq].keys = []
            rows.fail(err)
            raise
        finally:
            for sampler in samplers:
                sampler.close()
        rows.finish_all("length")
        return [row.text for row in rows.rows]

    def _assign(self, prompts: list[Prompt]) -> list[int]:
        """A sequence per prompt: the one whose cache shares the longest prefix with it, else the stalest."""
        free = set(range(len(self._slots)))
        seqs = []
        for prompt in prompts:
            best = max(free, key=lambda s: (shared_prefix(self._slots[s].keys, prompt.keys), -self._slots[s].used))
            free.discard(best)
            seqs.append(best)
            self._slots[best].used = time.monotonic()
        return seqs

    def _make_room(self, prompts: list[Prompt], seqs: list[int], requests: list[GenerationRequest]) -> None:
        """Trim each row's sequence to the prefix it shares; evict other sequences' caches until the batch fits."""
        need = 0
        for prompt, seq, request in zip(prompts, seqs, requests, strict=True):
            keep = min(shared_prefix(self._slots[seq].keys, prompt.keys), len(prompt) - 1)
            self.runtime.forget(seq, keep)
            self._slots[seq].keys = self._slots[seq].keys[:keep]
            need += len(prompt) - keep + request.settings.max_new_tokens
        mine = set(seqs)
        others = sorted((s for s in range(len(self._slots)) if s not in mine), key=lambda s: self._slots[s].used)
        while sum(len(s.keys) for s in self._slots) + need > self.runtime.n_ctx and others:
            seq = others.pop(0)
            self.runtime.forget(seq)
            self._slots[seq].keys = []

    def _prefill(self, seq: int, prompt: Prompt) -> None:
        """Decode the prompt's positions not already cached for `seq`; logits at its last position."""
        slot = self._slots[seq]
        tail = prompt.tail(len(slot.keys))
        for k, (pos, seg) in enumerate(tail):
            final = k == len(tail) - 1
            if isinstance(seg, list):
                rows = [(seq, pos + j, token, final and j == len(seg) - 1) for j, token in enumerate(seg)]
                self.runtime.decode_tokens(rows)
            else:
                self.runtime.decode_embeddings(seq, pos, seg, logits_last=final)
        slot.keys = list(prompt.keys)


def _send(request: GenerationRequest, event: tuple) -> None:
    if request.sink is not None:
        request.sink(event)

