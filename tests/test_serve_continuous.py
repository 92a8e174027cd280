"""Continuous batching: a request arriving during a running batch joins at the next step; same answers."""

from __future__ import annotations

import json
import queue
import threading
import time
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi")

from omnilm.generation import GenerationRequest, GenerationSettings
from omnilm.serve.batching import BatchScheduler
from omnilm.serve.continuous import step_wise_model

LONG, SHORT = "tell me a long story", "what color?"


def submit(scheduler, messages, **gen):
    events: queue.Queue = queue.Queue()
    request = GenerationRequest(messages, GenerationSettings(ignore_eos=True, **gen),
                                lambda event: events.put((event, time.monotonic())))
    scheduler.submit(request)
    return events


def finish(events) -> tuple[str, float]:
    """The answer and when its last event was sent."""
    text = ""
    while (event := events.get(timeout=120))[0][0] == "delta":
        text += event[0][1]
    assert event[0][0] == "done", event
    return text, event[1]


@pytest.mark.parametrize("mode", ["continuous", "request"])
def test_a_late_request_joins_at_the_next_step(tiny_lm, mode):
    scheduler = BatchScheduler(tiny_lm, batch_wait_ms=0, mode=mode)
    try:
        long = submit(scheduler, LONG, max_new_tokens=200)
        first = long.get(timeout=60)[0]  # the long answer is decoding
        assert first[0] == "delta"
        short = submit(scheduler, SHORT, max_new_tokens=3)
        short_text, short_done = finish(short)
        long_text, long_done = finish(long)
    finally:
        scheduler.close(timeout=120)
    assert (short_done < long_done) == (mode == "continuous")  # request-level: the short one waited
    assert first[1] + long_text == tiny_lm.chat(LONG, max_new_tokens=200, ignore_eos=True)
    assert short_text == tiny_lm.chat(SHORT, max_new_tokens=3, ignore_eos=True)


def test_rows_with_their_own_settings_share_steps_and_whole_batch_requests_still_run(tiny_lm):
    scheduler = BatchScheduler(tiny_lm, batch_wait_ms=50)
    gens = [{"max_new_tokens": 6}, {"max_new_tokens": 9, "temperature": 0.8, "seed": 3, "top_k": 20, "top_p": 0.9},
            {"max_new_tokens": 5, "repetition_penalty": 1.3}, {"max_new_tokens": 4, "num_beams": 2}]
    try:
        streams = [submit(scheduler, SHORT, **gen) for gen in gens]
        answers = [finish(events)[0] for events in streams]
    finally:
        scheduler.close(timeout=120)
    assert answers == [tiny_lm.chat(SHORT, ignore_eos=True, **gen) for gen in gens]
    assert scheduler.continuous and scheduler.largest_batch == 3  # the beam search ran on its own


def test_sliding_window_and_gated_models_are_not_step_wise(tiny_lm):
    from transformers import Qwen2Config

    sliding = Qwen2Config(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=1,
                          intermediate_size=64, vocab_size=64, use_sliding_window=True, sliding_window=8,
                          max_window_layers=0)
    assert step_wise_model(tiny_lm)
    assert not step_wise_model(SimpleNamespace(model=SimpleNamespace(llm=SimpleNamespace(config=sliding),
                                                                      fusion=None)))
    assert not step_wise_model(SimpleNamespace(model=SimpleNamespace(llm=tiny_lm.model.llm, fusion=object())))
    assert not step_wise_model(SimpleNamespace(generate_requests=lambda requests: None))  # e.g. llama.cpp


def test_a_request_cancelled_mid_stream_leaves_the_batch(tiny_lm):
    scheduler = BatchScheduler(tiny_lm, batch_wait_ms=0)
    try:
        events: queue.Queue = queue.Queue()
        request = GenerationRequest(LONG, GenerationSettings(max_new_tokens=500, ignore_eos=True), events.put)
        scheduler.submit(request)
        assert events.get(timeout=60)[0] == "delta"
        threading.Timer(0.05, request.cancelled.set).start()
        while (event := events.get(timeout=60))[0] == "delta":
            pass
        other = submit(scheduler, SHORT, max_new_tokens=2)
        assert finish(other)[0] == tiny_lm.chat(SHORT, max_new_tokens=2, ignore_eos=True)
    finally:
        scheduler.close(timeout=120)
    assert event[:2] == ("done", "cancelled") and event[2]["completion_tokens"] < 500


def test_shaped_rows_give_the_same_answers_in_both_modes(tiny_lm):
    from omnilm.grammar import Grammar

    schema = {"type": "object", "additionalProperties": False, "required": ["n"],
              "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}}}
    gens = [{"max_new_tokens": 24, "grammar": Grammar.json(schema)},
            {"max_new_tokens": 6, "logprobs": True, "top_logprobs": 2, "presence_penalty": 1.0,
             "frequency_penalty": 0.5, "logit_bias": {7: 2.0}}]
    answers = {}
    for mode in ("request", "continuous"):
        scheduler = BatchScheduler(tiny_lm, batch_wait_ms=0, mode=mode)
        try:
            streams = []
            for gen in gens:
                events: queue.Queue = queue.Queue()
                scheduler.submit(GenerationRequest(SHORT, GenerationSettings(**gen), events.put))
                streams.append(events)
            answers[mode] = [_all(events) for events in streams]
        finally:
            scheduler.close(timeout=120)
    assert answers["request"] == answers["continuous"]
    (text, _), (_, entries) = answers["continuous"]
    assert 0 <= json.loads(text)["n"] <= 99
    assert len(entries) == 6 and all(len(e["top_logprobs"]) == 2 for e in entries)


def _all(events) -> tuple[str, list]:
    text, entries = "", []
    while (event := events.get(timeout=120))[0] == "delta":
        text += event[1]
        entries += event[2] if len(event) > 2 else []
    assert event[0] == "done", event
    return text, entries


def test_an_engine_without_steps_gets_request_level_batches_through_generate_requests():
    class Engine:  # the seam a llama.cpp engine fills: generate a batch, stream each row to its sink
        batches: list[int] = []

        def generate_requests(self, requests):
            self.batches.append(len(requests))
            for request in requests:
                request.sink(("delta", "hi"))
                request.sink(("done", "stop", {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}))

    engine = Engine()
    scheduler = BatchScheduler(engine, batch_wait_ms=100)
    streams = [submit(scheduler, SHORT, max_new_tokens=2) for _ in range(3)]
    scheduler.close(timeout=30)
    assert not scheduler.continuous and engine.batches == [3]
    assert all(finish(events)[0] == "hi" for events in streams)
