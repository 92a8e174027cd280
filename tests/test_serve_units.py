"""Pieces of the server without HTTP: scheduler, row streaming, address checks, settings."""

from __future__ import annotations

import queue

import pytest

pytest.importorskip("fastapi")

from omnilm.errors import ConfigError  # noqa: E402
from omnilm.generation import GenerationRequest, GenerationSettings, RowTracker  # noqa: E402
from omnilm.serve.batching import BatchScheduler  # noqa: E402
from omnilm.serve.errors import APIError  # noqa: E402
from omnilm.serve.media import public_address  # noqa: E402
from omnilm.serve.settings import ServeSettings  # noqa: E402
from omnilm.testing import build_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def lm(tiny_lm):
    return tiny_lm


def collect(messages=None, **gen) -> tuple[GenerationRequest, queue.Queue]:
    events: queue.Queue = queue.Queue()
    messages = messages or [{"role": "user", "content": "hi"}]
    return GenerationRequest(messages, GenerationSettings(**gen), events.put), events


def drain(events: queue.Queue, timeout: float = 60) -> tuple[str, tuple]:
    text = ""
    while True:
        event = events.get(timeout=timeout)
        if event[0] == "delta":
            text += event[1]
        else:
            return text, event


def feed(tokenizer, text: str, **kwargs) -> tuple[list[str], tuple, RowTracker]:
    import torch

    request, events = collect(**kwargs)
    ids = tokenizer.encode(text, add_special_tokens=False)
    tracker = RowTracker([request], tokenizer, {tokenizer.eos_token_id}, [3])
    for i in range(len(ids)):
        if tracker(torch.tensor([ids[: i + 1]])).all():
            break
    tracker.finish_all("length")
    pieces = []
    while True:
        event = events.get_nowait()
        if event[0] != "delta":
            return pieces, event, tracker
        pieces.append(event[1])


def test_rows_stream_text_and_cut_at_stop_strings():
    tokenizer = build_tokenizer()
    pieces, done, _ = feed(tokenizer, "The capital of France is Paris.", max_new_tokens=100, stop=["Paris"])
    assert "".join(pieces) == "The capital of France is "
    assert done[1] == "stop" and len(pieces) > 1  # streamed in several pieces
    assert not any("Par" in p for p in pieces)  # a forming stop string is held back
    pieces, done, _ = feed(tokenizer, "red green blue", max_new_tokens=2)
    assert done[1] == "length" and done[2]["completion_tokens"] == 2 and done[2]["prompt_tokens"] == 3
    assert "".join(pieces) == tokenizer.decode(tokenizer.encode("red green blue", add_special_tokens=False)[:2])


def test_end_of_sequence_finishes_a_row_and_flushes_held_text():
    tokenizer = build_tokenizer()
    pieces, done, _ = feed(tokenizer, "yes no<|im_end|>red", max_new_tokens=100, stop=["circle"])
    assert "".join(pieces) == "yes no" and done[1] == "stop"


def test_scheduler_batches_isolates_bad_requests_and_drains_on_close(lm):
    scheduler = BatchScheduler(lm, max_batch_size=8, batch_wait_ms=200)
    good = [collect(max_new_tokens=4, ignore_eos=True) for _ in range(3)]
    bad = collect(messages=[{"role": "user", "content": [{"type": "image", "image": b"not an image"}]}])
    cancelled = collect()
    cancelled[0].cancelled.set()
    for request, _ in [*good, bad, cancelled]:
        scheduler.submit(request)
    scheduler.close(timeout=120)  # returns once everything queued has been answered
    for _, events in good:
        text, done = drain(events, timeout=1)
        assert done[0] == "done" and done[2]["completion_tokens"] == 4
    assert drain(bad[1], timeout=1)[1][0] == "error"
    assert drain(cancelled[1], timeout=1)[1][1] == "cancelled"
    assert scheduler.largest_batch >= 3
    with pytest.raises(RuntimeError, match="shutting down"):
        scheduler.submit(collect()[0])


def test_requests_with_other_sampling_settings_wait_for_their_own_batch(lm):
    scheduler = BatchScheduler(lm, max_batch_size=8, batch_wait_ms=200, mode="request")
    greedy = [collect(max_new_tokens=2) for _ in range(2)]
    sampled = [collect(max_new_tokens=2, temperature=0.7, seed=1) for _ in range(2)]
    for request, _ in [greedy[0], sampled[0], greedy[1], sampled[1]]:
        scheduler.submit(request)
    scheduler.close(timeout=120)
    assert scheduler.batches == 2 and scheduler.largest_batch == 2
    assert all(drain(events, 1)[1][0] == "done" for _, events in greedy + sampled)


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "10.1.2.3", "192.168.0.1", "172.16.5.4", "169.254.169.254",
                                     "fe80::1", "fc00::1", "::ffff:127.0.0.1", "0.0.0.0", "100.64.0.1", "224.0.0.1"])
def test_non_public_addresses_are_refused(address):
    with pytest.raises(APIError, match="loopback, private"):
        public_address(address, 80)


def test_public_address_literal_passes():
    assert public_address("93.184.216.34", 443) == "93.184.216.34"  # a literal: no DNS query is made


def test_settings_validate_and_read_the_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("OMNILM_API_KEY", "from-env")
    assert ServeSettings().api_key == "from-env"
    assert ServeSettings(api_key="flag").api_key == "flag"
    assert ServeSettings(allowed_hosts=(" Example.org. ",)).allowed_hosts == ("example.org",)
    with pytest.raises(ConfigError, match="allow-list"):
        ServeSettings(allow_remote_media=True)
    with pytest.raises(ConfigError, match="max_tokens"):
        ServeSettings(max_tokens=0)
