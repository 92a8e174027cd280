"""The n choices of one request: submitted to the scheduler, their events gathered into a reply or a stream.

Each choice is one `GenerationRequest`; their sinks feed one queue with (choice index, event). A reply waits
for every choice; a stream sends each choice's chunks as they come (OpenAI's `index` tells them apart).
`ChatShape` and `CompletionShape` write the two endpoints' JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from omnilm.errors import OmniError
from omnilm.generation import GenerationRequest
from omnilm.generation import usage as count_usage
from omnilm.serve import tools as toolkit
from omnilm.serve.errors import APIError


class Choices:
    """The choices of one request, their shared event queue and deadline; cancels them when abandoned or late."""

    def __init__(self, requests: list[GenerationRequest], deadline: float, metrics=None) -> None:
        self.loop, self.queue = asyncio.get_running_loop(), asyncio.Queue()
        self.requests, self.deadline, self.metrics = requests, deadline, metrics
        self.arrived = time.monotonic()
        for index, request in enumerate(requests):
            request.sink = self._sink(index)

    def _sink(self, index: int):
        first = None

        def sink(event: tuple) -> None:
            nonlocal first
            if event[0] == "delta" and first is None:
                first = time.monotonic()
            elif event[0] == "done" and self.metrics is not None:
                self.metrics.observe_choice(arrived=self.arrived, first=first, done=time.monotonic(),
                                            tokens=event[2]["completion_tokens"])
            with contextlib.suppress(RuntimeError):  # the event loop is gone (server stopped)
                self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, event))
        return sink

    def cancel(self) -> None:
        for request in self.requests:
            request.cancelled.set()

    async def next_or_raise(self) -> tuple[int, tuple]:
        try:
            async with asyncio.timeout_at(self.deadline):
                index, event = await self.queue.get()
        except TimeoutError:
            self.cancel()
            raise APIError(408, "the request took longer than this server's timeout; ask for fewer tokens or "
                                "retry when it is less busy") from None
        except asyncio.CancelledError:  # the client went away
            self.cancel()
            raise
        if event[0] == "error":
            self.cancel()
            err = event[1]
            if isinstance(err, OmniError):
                raise APIError(400, str(err), param="messages")
            raise APIError(500, f"generation failed: {type(err).__name__}: {err}")
        return index, event


class ChatShape:
    """chat.completion JSON; with tools in play, `<tool_call>` answers become tool_calls."""

    object, chunk_object = "chat.completion", "chat.completion.chunk"

    def __init__(self, *, tools: bool, parallel: bool, logprobs: bool) -> None:
        self.tools, self.parallel, self.logprobs = tools, parallel, logprobs

    def choice(self, index: int, text: str, entries: list, finish: str) -> dict:
        content, calls = toolkit.split_calls(text, parallel=self.parallel) if self.tools else (text, [])
        message = {"role": "assistant", "content": content, **({"tool_calls": calls} if calls else {})}
        return {"index": index, "message": message, "logprobs": self._logprobs(entries),
                "finish_reason": "tool_calls" if calls else finish}

    def first_delta(self) -> dict:
        return {"role": "assistant", "content": ""}

    def delta(self, text: str, entries: list) -> dict:
        return {"delta": {"content": text}, "logprobs": self._logprobs(entries)}

    def tool_deltas(self, text: str) -> tuple[list[dict], bool]:
        """Deltas for an answer held back as a possible call: tool_calls chunks, or the text after all."""
        content, calls = toolkit.split_calls(text, parallel=self.parallel)
        if not calls:
            return ([{"content": text}] if text else []), False
        deltas = [{"tool_calls": [{"index": i, "id": c["id"], "type": "function",
                                   "function": {"name": c["function"]["name"], "arguments": ""}}]}
                  for i, c in enumerate(calls)]
        deltas += [{"tool_calls": [{"index": i, "function": {"arguments": c["function"]["arguments"]}}]}
                   for i, c in enumerate(calls)]
        return ([{"content": content}] if content else []) + deltas, True

    def _logprobs(self, entries: list) -> dict | None:
        return {"content": entries, "refusal": None} if self.logprobs else None


class CompletionShape:
    """text_completion JSON (the legacy API's logprobs: tokens, token_logprobs, top_logprobs, text_offset)."""

    object, chunk_object = "text_completion", "text_completion"
    tools = False

    def __init__(self, *, logprobs: bool) -> None:
        self.logprobs = logprobs

    def choice(self, index: int, text: str, entries: list, finish: str) -> dict:
        return {"index": index, "text": text, "logprobs": self._logprobs(entries), "finish_reason": finish}

    def delta(self, text: str, entries: list) -> dict:
        return {"text": text, "logprobs": self._logprobs(entries)}

    def _logprobs(self, entries: list) -> dict | None:
        if not self.logprobs:
            return None
        offsets, at = [], 0
        for e in entries:
            offsets.append(at)
            at += len(e["token"])
        return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
                "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
                "text_offset": offsets}


async def reply(choices: Choices, shape, meta: dict, first: tuple[int, tuple]) -> dict:
    """The whole answer of every choice, once all are done."""
    n = len(choices.requests)
    texts, entries, done = [[] for _ in range(n)], [[] for _ in range(n)], {}
    index, event = first
    while True:
        if event[0] == "delta":
            texts[index].append(event[1])
            entries[index] += event[2] if len(event) > 2 else []
        else:
            done[index] = event
            if len(done) == n:
                break
        index, event = await choices.next_or_raise()
    out = [shape.choice(i, "".join(texts[i]), entries[i], done[i][1]) for i in range(n)]
    return {**meta, "object": shape.object, "system_fingerprint": None, "choices": out,
            "usage": total_usage([done[i][2] for i in range(n)])}


async def stream(choices: Choices, shape, meta: dict, first: tuple[int, tuple], include_usage: bool):
    """Server-sent events: per choice a role chunk, content (or tool-call) chunks, a finish chunk; then
    [a usage chunk] and `[DONE]`."""
    n, chat = len(choices.requests), isinstance(shape, ChatShape)

    def chunk(index: int, body: dict, finish: str | None = None) -> str:
        choice = {"index": index, **body, "finish_reason": finish}
        if chat:
            choice.setdefault("logprobs", None)
        data = {**meta, "object": shape.chunk_object, "system_fingerprint": None, "choices": [choice]}
        return f"data: {json.dumps(data)}\n\n"

    held = [""] * n  # text held back while it may still become a tool call
    done: dict[int, tuple] = {}
    try:
        if chat:
            for i in range(n):
                yield chunk(i, {"delta": shape.first_delta()})
        index, event = first
        while True:
            if event[0] == "delta":
                entries = event[2] if len(event) > 2 else []
                if chat and shape.tools and (held[index] or toolkit.may_be_call(event[1])):
                    held[index] += event[1]
                    if not toolkit.may_be_call(held[index]):  # it was text after all
                        yield chunk(index, shape.delta(held[index], entries))
                        held[index] = ""
                elif event[1] or entries:
                    yield chunk(index, shape.delta(event[1], entries))
            else:
                finish = event[1]
                if held[index]:
                    deltas, called = shape.tool_deltas(held[index])
                    for delta in deltas:
                        yield chunk(index, {"delta": delta})
                    finish = "tool_calls" if called else finish
                yield chunk(index, {"delta": {}} if chat else {"text": ""}, finish)
                done[index] = event
                if len(done) == n:
                    break
            index, event = await choices.next_or_raise()
        if include_usage:
            body = {**meta, "object": shape.chunk_object, "choices": [],
                    "usage": total_usage([done[i][2] for i in range(n)])}
            yield f"data: {json.dumps(body)}\n\n"
    except APIError as err:  # too late for a status code: report it in the stream
        yield f"data: {json.dumps(err.body())}\n\n"
    finally:
        choices.cancel()  # no-op when finished; stops generation if the client left
    yield "data: [DONE]\n\n"


def total_usage(usages: list[dict]) -> dict:
    """One prompt, n completions: the prompt is counted once."""
    return count_usage(usages[0]["prompt_tokens"], sum(u["completion_tokens"] for u in usages))
