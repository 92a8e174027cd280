"""Dynamic batching: concurrent requests are generated together in one left-padded batch.

One worker thread owns the model. It takes the waiting requests (up to `max_batch_size` that share
sampling settings), encodes them as one batch and runs `omnilm.generation.generate_batch` once for all
of them, which streams each row's text to its request and finishes the row on its own end-of-sequence,
stop string, token budget or cancellation — so one short answer never waits on a long one to be
returned, and throughput grows with the number of clients. Requests that arrive during a batch form
the next one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from omnilm.generation import GenerationRequest, generate_batch, usage

logger = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """The scheduler's queue is full, or it is shutting down."""


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
            request.sink(("done", "cancelled", usage(0, 0)))
        self._held = [r for r in self._held if not r.cancelled.is_set()]
        if not self._held:
            return []
        key = self._held[0].settings.sampling_key()
        batch = [r for r in self._held if r.settings.sampling_key() == key][: self.max_batch_size]
        self._held = [r for r in self._held if r not in batch]
        return batch

    def _run(self, batch: list[GenerationRequest]) -> None:
        lm = self.lm
        if getattr(lm, "engine", "torch") != "torch":  # the llama.cpp engine prepares and reports each request
            self.batches += 1
            self.largest_batch = max(self.largest_batch, len(batch))
            lm.generate_requests(batch)
            return
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
        started = time.monotonic()
        try:
            generate_batch(lm.model, lm.processor.tokenizer, inputs, batch)
        except Exception:  # the unfinished rows got the error
            logger.exception("generation failed for a batch of %d", len(batch))
            return
        logger.debug("batch of %d done in %.2fs", len(batch), time.monotonic() - started)
