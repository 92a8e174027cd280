"""Continuous batching on the llama.cpp engine: each row decodes in a llama.cpp sequence of its own, so a request
that arrives while others decode is prefilled into a free sequence and joins them at the next step.

`LlamaStepBatch` has the interface of the PyTorch path's `StepBatch` (join, step, fail, len), so the server's
scheduler drives both alike; `LlamaCppLM.generate_requests` uses it too (rows beyond `n_seq` join as
others finish). A finished row's sequence keeps its KV cache for the conversation's next turn.
"""

from __future__ import annotations

from dataclasses import dataclass

from omnilm.generation import GenerationRequest, Row
from omnilm.llamacpp.prompt import Prompt
from omnilm.llamacpp.sampling import RowSampler, check_supported


@dataclass
class _Live:
    row: Row
    seq: int
    sampler: RowSampler
    last: int = -1  # the newest token: chosen, not yet in the KV cache


class LlamaStepBatch:
    """The rows of a LlamaCppLM decoding together, one llama.cpp sequence each (at most `max_rows`)."""

    def __init__(self, lm) -> None:
        self.lm = lm
        self.max_rows = lm.runtime.n_seq
        self.live: list[_Live] = []

    def __len__(self) -> int:
        return len(self.live)

    def join(self, requests: list[GenerationRequest]) -> list[Row]:
        """Prefill `requests` into free sequences (no more than there are); each gets its first token now.

        A request that cannot be prepared (bad media, an unsupported setting, too long) gets its own error; if
        the prefill itself fails, it raises and has sent nothing (as the PyTorch StepBatch). Returns the rows
        made (their `text` is the answer once done)."""
        lm = self.lm
        if len(requests) > self.max_rows - len(self.live):
            raise ValueError(f"{len(requests)} rows cannot join {len(self.live)} of {self.max_rows} sequences")
        with lm._lock:
            ready = []
            for request in requests:
                try:
                    check_supported(request.settings)
                    ready.append(request)
                except Exception as err:  # noqa: BLE001 - reported to this request only
                    request.send(("error", err))
            chunk = [(r, p) for r, p in zip(ready, lm._prompts(ready), strict=True) if p is not None]
            return self._prefill(chunk) if chunk else []

    def step(self) -> None:
        """One token for every running row."""
        lm = self.lm
        with lm._lock:
            try:
                lm.runtime.decode_tokens([(x.seq, len(lm._slots[x.seq].keys), x.last, True) for x in self.live])
                for j, x in enumerate(self.live):
                    lm._slots[x.seq].keys.append(x.last)
                    x.last = x.sampler.next(lm.runtime, j, len(x.row.tokens))
                    x.row.add(x.last, x.last in lm.eos_ids)
            except BaseException as err:
                self.fail(err)
                raise
            self._drop_finished()

    def fail(self, err: BaseException) -> None:
        """Send `err` to every running row, forget their sequences (their cache state is unknown) and empty."""
        self._fail(self.live, err)
        self.live = []

    # Steps --------------------------------------------------------------------------------------
    def _prefill(self, chunk: list[tuple[GenerationRequest, Prompt]]) -> list[Row]:
        lm = self.lm
        requests, prompts = [r for r, _ in chunk], [p for _, p in chunk]
        busy = {x.seq for x in self.live}
        seqs = lm._assign(prompts, busy)
        new = []
        try:
            lm._make_room(prompts, seqs, requests, busy)
            for request, prompt, seq in zip(requests, prompts, seqs, strict=True):
                sampler = RowSampler(lm.runtime.lc, request.settings, n_vocab=lm.runtime.n_vocab,
                                     eos_ids=lm.eos_ids, default_penalty=lm.default_penalty)
                new.append(_Live(Row(request, lm.processor.tokenizer, len(prompt)), seq, sampler))
            first = lm._prefill(seqs, prompts, [x.sampler for x in new])
        except BaseException:  # nothing was sent to these rows: the caller reports the error (or retries them)
            for x in new:
                x.sampler.close()
            for seq in seqs:
                lm.runtime.forget(seq)
                lm._slots[seq].keys = []
            raise
        for x, token in zip(new, first, strict=True):
            x.last = token
            x.row.add(token, token in lm.eos_ids)
        self.live += new
        self._drop_finished()
        return [x.row for x in new]

    def _drop_finished(self) -> None:
        for x in self.live:
            if not x.row.done and x.row.request.cancelled.is_set():
                x.row.finish("cancelled")
        for x in self.live:
            if x.row.done:
                x.sampler.close()
        self.live = [x for x in self.live if not x.row.done]

    def _fail(self, rows: list[_Live], err: BaseException) -> None:
        for x in rows:
            self.lm.runtime.forget(x.seq)
            self.lm._slots[x.seq].keys = []
            x.sampler.close()
            if not x.row.done:
                x.row.done = True
                x.row.emit(("error", err))

