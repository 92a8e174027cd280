"""The OpenAI API as clients use it (issue 21), on the trained quickstart model where one exists ($OMNILM_BENCH_MODEL,
runs/quickstart/model), else the packaged Qwen2.5-0.5B-Instruct (bf16) + DINOv2-S with an untrained connector.

Sections, each beside its reference in the same run:
- grammar_libraries: per-token mask time and schema compile time of the grammar libraries that install here
  without CUDA, on Qwen's 151k-token vocabulary (why omnilm uses llguidance).
- constrained_cost: decode tokens/s with a JSON-schema grammar vs free decoding, interleaved (target: ≤ 20%).
- structured_output: 50 varied `client.chat.completions.parse(response_format=<pydantic model>)` requests
  through the official client, a third with an image (target: 100% parsed). Without the quickstart model the
  vision connector is untrained: the images are noise to the LLM, the grammar still holds.
- latency: 16 clients with Poisson arrivals, continuous vs request-level batching, rounds interleaved in one
  run (target: p95 at least 30% lower, same throughput or better, 0 errors).
`OMNILM_BENCH_TINY=1` runs everything on the tiny random model instead (seconds; figures measure the server);
`OMNILM_BENCH_PARTS=structured_output,latency` runs only those parts.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import random
import statistics
import threading
import time
from pathlib import Path

import torch
from loadgen import latency_summary, run_threads

logger = logging.getLogger(__name__)
QWEN = "pkg:qwen2.5-0.5b-instruct"
CLIENTS = 16
PARTS = ("grammar_libraries", "constrained_cost", "structured_output", "latency")  # OMNILM_BENCH_PARTS=a,b: some
STRUCTURED_REQUESTS = 50
QUICKSTART_MODELS = ("runs/quickstart/model", "/tmp/demo/runs/quickstart/model")  # $OMNILM_BENCH_MODEL first


# Models -------------------------------------------------------------------------------------------------
def _models():
    """(text model, model with vision), sharing nothing; tiny ones with OMNILM_BENCH_TINY=1."""
    from omnilm import OmniConfig, OmniLM
    from omnilm.config import LLMConfig, VisionConfig
    from omnilm.testing import tiny_model

    if os.environ.get("OMNILM_BENCH_TINY"):
        lm = tiny_model(("image",))
        return lm, lm, "omnilm.testing.tiny_model(('image',)): random, measures the server only"
    trained = next((Path(p) for p in (os.environ.get("OMNILM_BENCH_MODEL"), *QUICKSTART_MODELS)
                    if p and (Path(p) / "omnilm.json").is_file()), None)
    if trained is not None:  # the trained quickstart model, as the targets name it
        import omnilm

        lm = omnilm.load(str(trained))
        return lm, lm, f"the quickstart model {trained}"
    torch.manual_seed(0)
    vision = OmniLM.from_config(OmniConfig(llm=LLMConfig(source=QWEN, dtype="bfloat16"),
                                           vision=VisionConfig(source="pkg:dinov2-small", pooling="avg", pool_size=4)))
    return vision, vision, f"{QWEN} (bf16) + pkg:dinov2-small, untrained mlp connector"


def _image_url(seed: int) -> str:
    from PIL import Image

    from omnilm.data.toy import shape_image

    rng = random.Random(seed)
    image: Image.Image = shape_image(rng.choice(["circle", "square", "triangle"]),
                                     rng.choice(["red", "green", "blue", "yellow"]), size=64, box=(12, 12, 52, 52))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# Grammar libraries --------------------------------------------------------------------------------------
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["name", "age", "tags", "ok"],
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                         "tags": {"type": "array", "items": {"type": "string"}}, "ok": {"type": "boolean"}}}


def grammar_libraries(tokenizer) -> dict:
    """Walk a 26-token JSON answer through each library's mask; ms per token, compile and setup seconds."""
    target = tokenizer.encode(json.dumps({"name": "Ada Lovelace", "age": 36, "tags": ["math", "poet", "engine"],
                                          "ok": True}, separators=(",", ":")))
    out = {"answer_tokens": len(target)}
    out["llguidance"] = _llguidance(tokenizer, target)
    try:
        out["outlines-core"] = _outlines(tokenizer, target)
    except ImportError:
        out["outlines-core"] = "not installed (pip install outlines-core to compare)"
    try:
        from lmformatenforcer.integrations.transformers import build_token_enforcer_tokenizer_data  # noqa: F401

        out["lm-format-enforcer"] = "imports (not measured)"
    except ImportError as err:
        out["lm-format-enforcer"] = f"not usable: {err}"
    out["xgrammar"] = "not measured: pip would install triton (a CUDA compiler) with it"
    return out


def _llguidance(tokenizer, target: list[int]) -> dict:
    import llguidance
    import llguidance.hf
    import llguidance.torch

    start = time.perf_counter()
    ll = llguidance.hf.from_tokenizer(tokenizer)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    matcher = llguidance.LLMatcher(ll, llguidance.LLMatcher.grammar_from_json_schema(SCHEMA))
    compile_s = time.perf_counter() - start
    bitmask = llguidance.torch.allocate_token_bitmask(1, ll.vocab_size)
    start = time.perf_counter()
    for token in target:
        llguidance.torch.fill_next_token_bitmask(matcher, bitmask, 0)
        assert matcher.consume_token(token), matcher.get_error()
    per_token = (time.perf_counter() - start) / len(target)
    return {"tokenizer_setup_s": round(setup, 3), "compile_s": round(compile_s, 4),
            "mask_ms_per_token": round(per_token * 1e3, 4)}


def _outlines(tokenizer, target: list[int]) -> dict:
    import outlines_core
    from outlines_core.json_schema import build_regex_from_schema

    start = time.perf_counter()
    vocab: dict[str, list[int]] = {}
    for i in range(len(tokenizer)):
        text = tokenizer.convert_tokens_to_string([tokenizer.convert_ids_to_tokens(i)])
        if text and "\ufffd" not in text and i not in tokenizer.all_special_ids:
            vocab.setdefault(text, []).append(i)
    vocabulary = outlines_core.Vocabulary(tokenizer.eos_token_id, vocab)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    guide = outlines_core.Guide(outlines_core.Index(build_regex_from_schema(json.dumps(SCHEMA)), vocabulary))
    compile_s = time.perf_counter() - start
    mask = torch.zeros(1, (len(tokenizer) + 31) // 32, dtype=torch.int32)
    start = time.perf_counter()
    for token in target:
        guide.write_mask_into(mask.data_ptr(), mask.numel(), mask.element_size())
        guide.advance(token)
    per_token = (time.perf_counter() - start) / len(target)
    return {"tokenizer_setup_s": round(setup, 3), "compile_s": round(compile_s, 4),
            "mask_ms_per_token": round(per_token * 1e3, 4)}


# Constrained decoding cost ------------------------------------------------------------------------------
def constrained_cost(lm, rounds: int = 3) -> dict:
    """Decode time per token after the first, JSON-schema answer vs a free answer of the same length, greedy,
    rounds interleaved (prefill excluded: the grammar acts per decoded token)."""
    from omnilm.generation import GenerationRequest, GenerationSettings, generate_batch
    from omnilm.grammar import Grammar

    schema = {"type": "object", "additionalProperties": False, "required": ["people"],
              "properties": {"people": {"type": "array", "minItems": 6, "maxItems": 6, "items": {
                  "type": "object", "additionalProperties": False, "required": ["name", "field", "born"],
                  "properties": {"name": {"type": "string", "maxLength": 24}, "field": {"type": "string",
                                 "maxLength": 24}, "born": {"type": "integer", "minimum": 1000, "maximum": 2024}}}}}}
    prompt = "List six famous scientists with their field and year of birth, as JSON."
    grammar = Grammar.json(schema)

    def decode(**gen) -> tuple[float, int]:
        times: list[tuple[str, float, tuple]] = []
        request = GenerationRequest(prompt, GenerationSettings(**gen),
                                    lambda e: times.append((e[0], time.perf_counter(), e)))
        generate_batch(lm.model, lm.processor.tokenizer, lm.prepare_inputs([prompt]), [request])
        first = next(t for kind, t, _ in times if kind == "delta")
        tokens = times[-1][2][2]["completion_tokens"]
        return (times[-1][1] - first) / max(1, tokens - 1), tokens

    decode(max_new_tokens=4, grammar=grammar)  # warm-up (and llguidance's tokenizer view, once)
    free, constrained, lengths = [], [], []
    for _ in range(rounds):
        per_token, tokens = decode(max_new_tokens=200, grammar=grammar)
        constrained.append(per_token)
        lengths.append(tokens)
        free.append(decode(max_new_tokens=tokens, ignore_eos=True)[0])
    free_s, constrained_s = 1 / statistics.median(free), 1 / statistics.median(constrained)
    cost = 1 - constrained_s / free_s
    return {"free_tokens_per_s": round(free_s, 2), "constrained_tokens_per_s": round(constrained_s, 2),
            "cost": round(cost, 3), "target_cost": 0.20, "meets_target": cost <= 0.20, "rounds": rounds,
            "answer_tokens": lengths}


# Structured output through the official client ----------------------------------------------------------
def structured_output(url: str) -> dict:
    import openai
    import pydantic

    class Shape(pydantic.BaseModel):
        shape: str = pydantic.Field(max_length=20)
        color: str = pydantic.Field(max_length=20)
        sides: int

    class Person(pydantic.BaseModel):
        name: str = pydantic.Field(max_length=30)
        born: int
        fields: list[str] = pydantic.Field(max_length=3)

    class Answer(pydantic.BaseModel):
        answer: bool
        reason: str = pydantic.Field(max_length=80)

    class City(pydantic.BaseModel):
        city: str = pydantic.Field(max_length=30)
        country: str = pydantic.Field(max_length=30)
        population_millions: float

    tasks = [(Shape, "Describe the shape in the image."), (Person, "Who was Marie Curie?"),
             (Answer, "Is the sky green?"), (City, "Tell me about the capital of Japan."),
             (Person, "Who was Alan Turing?"), (Answer, "Is 17 a prime number?"), (City, "Describe Paris.")]
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
    results: list[tuple[bool, str]] = []
    lock = threading.Lock()

    images = {i: _image_url(i) for i in range(0, STRUCTURED_REQUESTS, 3)}

    def one(i: int) -> None:
        model, question = tasks[i % len(tasks)]
        content: list[dict] = [{"type": "text", "text": question}]
        if i in images:
            content.insert(0, {"type": "image_url", "image_url": {"url": images[i]}})
        try:  # no max_tokens, as parse() users write it: the server's default budget (256)
            reply = client.chat.completions.parse(model="m", messages=[{"role": "user", "content": content}],
                                                  response_format=model, temperature=0.7 if i % 2 else 0, seed=i)
            ok, note = isinstance(reply.choices[0].message.parsed, model), reply.choices[0].message.content
        except openai.LengthFinishReasonError as err:
            ok, note = False, f"length: {err.completion.choices[0].message.content}"
        except (openai.OpenAIError, pydantic.ValidationError) as err:  # a failure is the measurement, not a crash
            ok, note = False, repr(err)
        with lock:
            results.append((ok, (note or "")[:300]))

    elapsed = run_threads(one, ((i,) for i in range(STRUCTURED_REQUESTS)))
    parsed = sum(ok for ok, _ in results)
    return {"requests": STRUCTURED_REQUESTS, "with_image": len(range(0, STRUCTURED_REQUESTS, 3)), "parsed": parsed,
            "parsed_rate": parsed / STRUCTURED_REQUESTS, "target": 1.0, "meets_target": parsed == STRUCTURED_REQUESTS,
            "seconds": round(elapsed, 1), "failures": [m for ok, m in results if not ok][:3]}


# Latency under Poisson arrivals -------------------------------------------------------------------------
def _poisson_load(url: str, *, rate: float, per_client: int, seed: int) -> dict:
    """16 clients; each waits an exponential gap, sends, waits for the answer, repeats. Mixed lengths."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    tokens = [0]
    lock = threading.Lock()

    def client(index: int) -> None:
        rng = random.Random(seed * 100 + index)
        with httpx.Client(base_url=url, timeout=600) as http:
            for k in range(per_client):
                time.sleep(rng.expovariate(rate / CLIENTS))
                n = rng.choice([4, 8, 16, 32, 48])
                body = {"messages": [{"role": "user", "content": f"Client {index} asks question {k}."}],
                        "max_tokens": n, "ignore_eos": True}
                start = time.perf_counter()
                try:
                    response = http.post("/v1/chat/completions", json=body)
                    ok = response.status_code == 200 and response.json()["usage"]["completion_tokens"] == n
                except httpx.HTTPError as err:
                    ok, response = False, err
                with lock:
                    latencies.append(time.perf_counter() - start)
                    tokens[0] += n if ok else 0
                    if not ok:
                        errors.append(str(response)[:200])

    elapsed = run_threads(client, ((i,) for i in range(CLIENTS)))
    return {"requests": len(latencies), "seconds": round(elapsed, 2), "tokens_per_s": round(tokens[0] / elapsed, 2),
            **latency_summary(latencies), "errors": len(errors)}


def latency(lm, *, rate: float, per_client: int, rounds: int = 2) -> dict:
    from omnilm.serve import ServeSettings, create_app
    from omnilm.serve.background import BackgroundServer

    runs: dict[str, list[dict]] = {"continuous": [], "request": []}
    for r in range(rounds):
        for mode in ("request", "continuous") if r % 2 == 0 else ("continuous", "request"):
            settings = ServeSettings(max_batch_size=CLIENTS, batching=mode, max_tokens=64, request_timeout=900)
            with BackgroundServer(create_app(lm, settings)) as server:
                runs[mode].append(_poisson_load(server.url, rate=rate, per_client=per_client, seed=r))
    summary = {}
    for mode, rs in runs.items():
        summary[mode] = {key: round(statistics.mean(x[key] for x in rs), 3)
                         for key in ("p50_s", "p95_s", "tokens_per_s", "seconds")}
        summary[mode]["errors"] = sum(x["errors"] for x in rs)
    drop = 1 - summary["continuous"]["p95_s"] / summary["request"]["p95_s"]
    return {"clients": CLIENTS, "arrival_rate_per_s": rate, "requests_per_client": per_client, "rounds": rounds,
            "max_tokens_mix": [4, 8, 16, 32, 48], **summary, "runs": runs, "p95_reduction": round(drop, 3),
            "target_p95_reduction": 0.30,
            "meets_target": drop >= 0.30 and summary["continuous"]["tokens_per_s"] >= summary["request"]["tokens_per_s"]
            and summary["continuous"]["errors"] == 0 and summary["request"]["errors"] == 0}


def run() -> dict:
    from omnilm.serve import ServeSettings, create_app
    from omnilm.serve.background import BackgroundServer

    tiny = bool(os.environ.get("OMNILM_BENCH_TINY"))
    only = set(filter(None, os.environ.get("OMNILM_BENCH_PARTS", "").split(","))) or set(PARTS)
    text_lm, vision_lm, name = _models()
    out = {"model": name, "note": "2 shared CPU cores: absolute speeds are noisy, compare figures within a section"}
    if "grammar_libraries" in only:
        out["grammar_libraries"] = grammar_libraries(text_lm.processor.tokenizer)
    if "constrained_cost" in only:
        out["constrained_cost"] = constrained_cost(text_lm)
    if "structured_output" in only:
        settings = ServeSettings(max_batch_size=CLIENTS, request_timeout=1800)
        with BackgroundServer(create_app(vision_lm, settings)) as server:
            out["structured_output"] = structured_output(server.url)
    if "latency" in only:
        out["latency"] = latency(text_lm, rate=8.0 if tiny else 0.75, per_client=4 if tiny else 2)
    for part in PARTS:
        if part in out:
            logger.info("%s: %s", part, json.dumps(out[part])[:2000])
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(json.dumps(run(), indent=2))
