"""Dynamic batching: concurrent requests are generated together in one left-padded batch.

One worker thread owns the model. It takes the waiting requests (up to `max_batch_size` that share
sampling settings), encodes them as one batch and runs HF `generate` once for all of them. A stopping
criterion called after every generation step reads each row's new token, streams its text to that
request, and finishes the row on its own end-of-sequence, stop string, token budget or cancellation —
so one short answer never waits on a long one to be returned, and throughput grows with the number
of clients. Requests that arrive during a batch form the next one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

logger = logging.getLogger(__name__)

Sink = Callable[[tuple], None]  # receives ("delta", text) · ("done", finish_reason, usage) · ("error", exc)


class QueueFullError(RuntimeError):
    """The scheduler's queue is full, or it is shutting down."""


@dataclass
class GenerationRequest:
    messages: list[dict]  # omnilm messages, media already decoded
    sink: Sink
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    ignore_eos: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event)

    def sampling_key(self) -> tuple:
        """Requests with equal keys can share one `generate` call."""
        sampling = ("greedy",) if self.temperature <= 0 else ("sample", self.temperature, self.top_p, self.seed)
        return (*sampling, self.ignore_eos)


class BatchScheduler:
    """Owns the model in one worker thread and generates queued requests in batches."""

    def __init__(self, lm, *, max_batch_size: int = 16, batch_wait_ms: float = 10.0, max_queue: int = 256) -> None:
        self.lm, self.max_batch_size, self.batch_wait = lm, max_batch_size, batch_wait_ms / 1000
        self._queue: queue.Queue[GenerationRequest | None] = queue.Queue(maxsize=max_queue)
        self._held: list[GenerationRequest] = []  # taken from the queue but not yet batched
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="omnilm-batcher", daemon=True)
        self._thread.start()
        self.batches = 0  # statistics, for logs and tests
        self.largest_batch = 0

    @property
    def closing(self) -> bool:
        return self._closing

    def submit(self, request: GenerationRequest) -> None:
        if self._closing:
            raise QueueFullError("the server is shutting down")
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            raise QueueFullError(f"{self._queue.maxsize} requests are already waiting; retry shortly") from None

    def close(self, timeout: float | None = None) -> None:
        """Refuse new requests, finish every queued and running one, then stop the worker."""
        self._closing = True
        self._queue.put(None)  # wakes the worker; it drains the queue before leaving
        self._thread.join(timeout)

    # Worker -------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                if batch:
                    self._run(batch)
            except Exception as err:  # never let one batch kill the worker
                logger.exception("the batch scheduler failed on a batch of %d", len(batch))
                for request in batch:
                    request.sink(("error", err))

    def _next_batch(self) -> list[GenerationRequest] | None:
        """Up to max_batch_size live requests sharing the first one's sampling key; None: time to stop."""
        if not self._held:
            item = self._queue.get()
            if item is None:
                if self._queue.empty():
                    return None
                self._queue.put(None)  # requests are still queued behind the sentinel: serve them first
                return []
            self._held.append(item)
        deadline = time.monotonic() + self.batch_wait
        while len(self._held) < self.max_batch_size * 2:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:  # closing: run what is held, then come back for the rest
                self._queue.put(None)
                break
            self._held.append(item)
        for request in [r for r in self._held if r.cancelled.is_set()]:
            request.sink(("done", "cancelled", _usage(0, 0)))
        self._held = [r for r in self._held if not r.cancelled.is_set()]
        if not self._held:
            return []
        key = self._held[0].sampling_key()
        batch = [r for r in self._held if r.sampling_key() == key][: self.max_batch_size]
        self._held = [r for r in self._held if r not in batch]
        return batch

    def _run(self, batch: list[GenerationRequest]) -> None:
        lm = self.lm
        try:
            inputs = lm.prepare_inputs([r.messages for r in batch])
        except Exception as err:  # one bad conversation must not fail its neighbours: retry them one by one
            if len(batch) > 1:
                for request in batch:
                    self._run([request])
                return
            batch[0].sink(("error", err))
            return
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        first = batch[0]
        kwargs, _ = lm.generation_kwargs(max_new_tokens=max(r.max_new_tokens for r in batch),
                                          temperature=first.temperature, top_p=first.top_p, seed=first.seed)
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
        eos_ids = set(kwargs["generation_config"].eos_token_id or [])
        rows = RowTracker(batch, lm.processor.tokenizer, eos_ids, prompt_lengths)
        if first.ignore_eos:  # the whole batch shares it (sampling_key): never sample an end-of-sequence token
            kwargs["generation_config"].suppress_tokens = sorted(eos_ids)
        started = time.monotonic()
        try:
            with torch.no_grad():
                lm.model.generate(**inputs, **kwargs, stopping_criteria=StoppingCriteriaList([rows]))
        except Exception as err:
            logger.exception("generation failed for a batch of %d", len(batch))
            rows.fail(err)
            return
        rows.finish_all("length")
        logger.debug("batch of %d done in %.2fs", len(batch), time.monotonic() - started)


class RowTracker(StoppingCriteria):
    """Called by `generate` after each step: streams each row's new text and says which rows are done."""

    def __init__(self, requests: list[GenerationRequest], tokenizer, eos_ids: set[int], prompt_lengths: list[int]):
        self.rows = [_Row(r, tokenizer, p) for r, p in zip(requests, prompt_lengths, strict=True)]
        self.eos_ids = eos_ids
        self._start: int | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: Any = None, **kwargs: Any) -> torch.BoolTensor:
        if self._start is None:
            self._start = input_ids.shape[1] - 1  # input_ids may or may not include the prompt
        newest = input_ids[:, -1].tolist()
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
                row.request.sink(("error", err))


class _Row:
    """One request's generated tokens and how much of their text has been sent."""

    def __init__(self, request: GenerationRequest, tokenizer, prompt_tokens: int) -> None:
        self.request, self.tokenizer, self.prompt_tokens = request, tokenizer, int(prompt_tokens)
        self.tokens: list[int] = []
        self.sent = 0  # characters of the decoded text already streamed
        self.done = False
        self.hold = max((len(s) for s in request.stop), default=1) - 1  # a stop string may still be forming

    def add(self, token: int, is_eos: bool) -> None:
        request = self.request
        if request.cancelled.is_set():
            self.finish("cancelled")
            return
        if is_eos and not request.ignore_eos:
            self.finish("stop", count=1)
            return
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in request.stop) if i >= 0), default=-1)
        if cut >= 0:
            self._send(text[:cut])
            self.finish("stop", flush=False)
        elif len(self.tokens) >= request.max_new_tokens:
            self.finish("length")
        else:
            ready = len(text) - self.hold
            while ready > self.sent and text[ready - 1] == "\ufffd":  # an incomplete UTF-8 character
                ready -= 1
            self._send(text[:ready])

    def _send(self, text: str) -> None:
        if len(text) > self.sent:
            self.request.sink(("delta", text[self.sent:]))
            self.sent = len(text)

    def finish(self, reason: str, count: int = 0, *, flush: bool = True) -> None:
        """End the row; `flush` sends text held back for stop strings; `count` adds an EOS to usage."""
        if flush and reason != "cancelled":
            self._send(self.tokenizer.decode(self.tokens, skip_special_tokens=True))
        self.done = True
        self.request.sink(("done", reason, _usage(self.prompt_tokens, len(self.tokens) + count)))


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
