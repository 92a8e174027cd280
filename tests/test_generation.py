"""The generation engine: settings (omnilm and transformers names), beams, streaming, and the shared row tracker."""

from __future__ import annotations

import queue
import re

import pytest
import torch

from omnilm.errors import OmniError
from omnilm.generation import GenerationRequest, GenerationSettings, generate_batch

MESSAGES = [{"role": "user", "content": "tell me about shapes"}]


@pytest.fixture(scope="module")
def lm():
    from omnilm.testing import tiny_model

    return tiny_model(("image",), seed=3)


def hf_generate(lm, **hf) -> str:
    """The answer of HF `generate` called directly with transformers' own arguments."""
    inputs = lm.prepare_inputs([MESSAGES])
    tokenizer = lm.processor.tokenizer
    new = lm.model.generate(**inputs, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **hf)
    return lm.processor.decode(new[0])


def test_transformers_style_arguments_are_accepted(lm):
    greedy = lm.chat(MESSAGES, max_new_tokens=6, temperature=0)
    assert lm.chat(MESSAGES, max_new_tokens=6, do_sample=False) == greedy  # raised TypeError before
    assert greedy == hf_generate(lm, max_new_tokens=6, do_sample=False)
    sampled = lm.chat(MESSAGES, max_new_tokens=12, temperature=1.0, seed=4, ignore_eos=True)
    assert lm.chat(MESSAGES, max_new_tokens=12, do_sample=True, seed=4, ignore_eos=True) == sampled  # T = 1.0
    for hf in ({"no_repeat_ngram_size": 1}, {"repetition_penalty": 3.0}, {"min_new_tokens": 10}):
        assert lm.chat(MESSAGES, max_new_tokens=10, do_sample=False, **hf) == hf_generate(
            lm, max_new_tokens=10, do_sample=False, **hf), hf


def test_beam_search_works_and_cuts_at_stop_strings_but_does_not_stream(lm):
    beams = lm.chat(MESSAGES, max_new_tokens=8, num_beams=3)
    assert beams == hf_generate(lm, max_new_tokens=8, num_beams=3, do_sample=False)
    assert len(beams) >= 3, beams
    stop = beams[1:3]
    assert lm.chat(MESSAGES, max_new_tokens=8, num_beams=3, stop=stop) == beams[: beams.find(stop)]
    with pytest.raises(OmniError, match="cannot stream"):
        lm.stream(MESSAGES, num_beams=3)  # refused at the call, before any work


@pytest.mark.parametrize(
    "gen, phrase",
    [
        ({"do_sample": True, "temperature": 0}, "drop temperature"),
        ({"do_sample": False, "temperature": 0.7}, "drop one of them"),
        ({"max_tokens": 5}, re.escape("unknown generation setting 'max_tokens' (did you mean 'max_new_tokens'?)")),
        ({"max_length": 20}, "give max_new_tokens"),
        ({"temperature": "hot"}, "generation.temperature: expected a number, got 'hot'"),
        ({"top_p": 0}, r"generation.top_p: must be in \(0, 1\]"),
        ({"num_beams": 0}, "generation.num_beams: must be >= 1"),
        ({"min_new_tokens": 9, "max_new_tokens": 4}, "lower min_new_tokens"),
        ({"stop": [""]}, "stop strings must not be empty"),
        ({"do_sample": "yes"}, "generation.do_sample: expected true or false"),
    ],
)
def test_bad_or_contradictory_settings_are_refused_clearly(lm, gen, phrase):
    with pytest.raises(OmniError, match=phrase):
        GenerationSettings.from_kwargs(**gen)
    with pytest.raises(OmniError, match=phrase):
        lm.chat(MESSAGES, **gen)


def test_unknown_settings_list_the_accepted_names():
    with pytest.raises(OmniError) as caught:
        GenerationSettings.from_kwargs(frobnicate=1)
    for name in ("do_sample", "max_new_tokens", "num_beams", "repetition_penalty", "stop", "temperature", "top_k"):
        assert name in str(caught.value)


def test_settings_round_trip_and_share_batches_only_when_they_can():
    settings = GenerationSettings.from_kwargs(max_new_tokens=9, do_sample=True, top_k=5, stop="END", seed=2)
    assert settings.temperature == 1.0 and settings.stop == ("END",)
    assert GenerationSettings.from_kwargs(**settings.as_kwargs()) == settings
    greedy = GenerationSettings(max_new_tokens=3, top_p=0.5, seed=1, stop=("x",))
    assert greedy.sampling_key() == GenerationSettings(max_new_tokens=50).sampling_key()  # greedy ignores top_p, seed
    assert settings.sampling_key() != GenerationSettings(temperature=1.0, top_k=5, seed=3).sampling_key()


@pytest.mark.parametrize("stop", [None, "second"])
def test_stream_pieces_join_to_the_chat_answer(lm, stop):
    gen = {"max_new_tokens": 20, "temperature": 0.8, "seed": 7, "ignore_eos": True}
    full = lm.chat(MESSAGES, **gen)
    if stop == "second":  # a stop string taken from the answer itself, so it always cuts
        assert len(full) >= 6, full
        stop = full[4:6]
    answer = lm.chat(MESSAGES, **gen, stop=stop)
    pieces = list(lm.stream(MESSAGES, **gen, stop=stop))
    assert len(pieces) > 1 and "".join(pieces) == answer
    assert answer == (full if stop is None else full[: full.find(stop)])


def test_stream_reraises_worker_errors_and_stops_when_closed(lm, monkeypatch):
    steps = []
    hook = lm.model.llm.get_output_embeddings().register_forward_hook(lambda *_: steps.append(1))
    try:
        pieces = lm.stream(MESSAGES, max_new_tokens=900, ignore_eos=True)
        next(pieces)
        pieces.close()  # the caller stops reading: generation ends at the next step
    finally:
        hook.remove()
    assert len(steps) < 450  # of 900

    def broken(*args, **kwargs):
        raise RuntimeError("the accelerator fell over")

    monkeypatch.setattr(lm.model.llm, "generate", broken)
    with pytest.raises(RuntimeError, match="fell over"):
        list(lm.stream(MESSAGES, max_new_tokens=4))
    with pytest.raises(RuntimeError, match="fell over"):
        lm.chat(MESSAGES, max_new_tokens=4)


def test_the_server_scheduler_and_the_library_share_one_engine(lm):
    pytest.importorskip("fastapi")
    from omnilm.serve.batching import BatchScheduler

    gen = {"max_new_tokens": 16, "temperature": 0.9, "seed": 5, "ignore_eos": True}
    full = lm.chat(MESSAGES, **gen)
    assert len(full) >= 4, full
    stop = (full[2:4],)
    events: queue.Queue = queue.Queue()
    scheduler = BatchScheduler(lm, batch_wait_ms=0)
    scheduler.submit(GenerationRequest(MESSAGES, GenerationSettings(**gen, stop=stop), events.put))
    scheduler.close(timeout=60)
    served, event = "", events.get(timeout=1)
    while event[0] == "delta":
        served, event = served + event[1], events.get(timeout=1)
    assert served == lm.chat(MESSAGES, **gen, stop=stop) == full[: full.find(stop[0])]
    assert event[:2] == ("done", "stop")


def test_rows_keep_their_own_budgets_in_one_batch(lm):
    requests = [GenerationRequest(MESSAGES, GenerationSettings(max_new_tokens=n, ignore_eos=True)) for n in (2, 9)]
    events: list = []
    requests[0].sink = events.append
    inputs = lm.prepare_inputs([MESSAGES, MESSAGES])
    short, long = generate_batch(lm.model, lm.processor.tokenizer, inputs, requests)
    assert long.startswith(short) and len(long) > len(short)
    assert short == lm.chat(MESSAGES, max_new_tokens=2, ignore_eos=True)
    assert events[-1] == ("done", "length", {"prompt_tokens": int(inputs["attention_mask"][0].sum()),
                                             "completion_tokens": 2,
                                             "total_tokens": int(inputs["attention_mask"][0].sum()) + 2})
    assert torch.equal(inputs["attention_mask"][0], inputs["attention_mask"][1])


def test_an_endpoint_refuses_settings_the_openai_api_cannot_carry():
    pytest.importorskip("openai")
    from omnilm.evaluation import EndpointModel

    model = EndpointModel("http://127.0.0.1:9", model="m", max_retries=0)  # no request is made
    with pytest.raises(OmniError, match="drop num_beams, repetition_penalty"):
        model.chat_batch([MESSAGES], num_beams=2, repetition_penalty=1.2)
    with pytest.raises(OmniError, match="drop temperature"):
        model.chat_batch([MESSAGES], do_sample=True, temperature=0)
