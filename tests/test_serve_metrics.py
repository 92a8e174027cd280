"""GET /metrics scraped and parsed with prometheus_client's parser; the media cache encodes an image once."""

from __future__ import annotations

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families

from omnilm.media_cache import MediaCache
from omnilm.serve import ServeSettings, create_app
from omnilm.serve.background import BackgroundServer
from tests.test_serve_api import image_url, img, user


def scrape(server) -> dict[str, list]:
    import httpx

    text = httpx.get(server.url + "/metrics", timeout=30).text
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: list, name: str, **labels) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_count_requests_tokens_latency_and_cache_hits(tiny_lm):
    with BackgroundServer(create_app(tiny_lm, ServeSettings(max_tokens=16))) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
        conversation = user(img(image_url()), "what is it?")
        for _ in range(3):  # a client resending the same image each turn
            client.chat.completions.create(model="m", messages=conversation, max_tokens=5,
                                           extra_body={"ignore_eos": True})
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="m", messages=conversation, max_tokens=5, extra_body={"nope": 1})
        families = scrape(server)
    requests = families["omnilm_requests"]
    assert value(requests, "omnilm_requests_total", endpoint="/v1/chat/completions", status="200") == 3
    assert value(requests, "omnilm_requests_total", endpoint="/v1/chat/completions", status="400") == 1
    assert value(families["omnilm_generated_tokens"], "omnilm_generated_tokens_total") == 15
    assert value(families["omnilm_time_to_first_token_seconds"], "omnilm_time_to_first_token_seconds_count") == 3
    assert value(families["omnilm_time_per_output_token_seconds"],
                 "omnilm_time_per_output_token_seconds_count") == 3
    assert value(families["omnilm_batch_size"], "omnilm_batch_size_count") >= 1
    assert value(families["omnilm_queue_depth"], "omnilm_queue_depth") == 0
    assert value(families["omnilm_media_cache_misses"], "omnilm_media_cache_misses") == 1  # encoded once
    assert value(families["omnilm_media_cache_hits"], "omnilm_media_cache_hits") == 2
    assert value(families["omnilm_tokens_per_second"], "omnilm_tokens_per_second") > 0
    tiny_lm.model.media_cache = None  # the session's shared model goes back to encoding every time


def test_cached_features_equal_fresh_ones_and_the_cache_is_bounded(tiny_lm, red_image):
    import torch

    model = tiny_lm.model
    inputs = tiny_lm.processor([{"role": "user", "content": [{"type": "image", "image": red_image}, {
        "type": "text", "text": "hi"}]}])
    with torch.no_grad():
        fresh = model.encode_media(pixel_values=inputs["pixel_values"])["image"][0]
        model.media_cache = cache = MediaCache(max_bytes=fresh.numel() * fresh.element_size())
        try:
            first = model.encode_media(pixel_values=inputs["pixel_values"])["image"][0]
            again = model.encode_media(pixel_values=inputs["pixel_values"])["image"][0]
            other = model.encode_media(pixel_values=inputs["pixel_values"] + 1)["image"][0]
        finally:
            model.media_cache = None
    assert torch.equal(first, fresh) and torch.equal(again, fresh) and not torch.equal(other, fresh)
    assert (cache.hits, cache.misses) == (1, 2) and cache.held_bytes <= cache.max_bytes
    assert len(cache._entries) == 1  # the bound evicted the first image for the second
    model.media_cache = cache
    try:
        with torch.no_grad():
            for p in model.connectors.parameters():
                p.add_(0.5)
            changed = model.encode_media(pixel_values=inputs["pixel_values"] + 1)["image"][0]
            for p in model.connectors.parameters():
                p.sub_(0.5)
    finally:
        model.media_cache = None
    assert not torch.equal(changed, other) and cache.misses == 3  # new weights: encoded again
