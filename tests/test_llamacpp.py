"""The llama.cpp engine on tiny models: GGUF export, embedding injection, the OmniLM API, errors."""

from __future__ import annotations

import json
import shutil
import sys
import threading

import pytest

pytest.importorskip("llama_cpp")

import omnilm
from omnilm.errors import OmniError
from omnilm.export.gguf import export_gguf
from omnilm.llamacpp.loading import MANIFEST_FILE
from omnilm.llamacpp.native import INSTALL_COMMAND, Runtime

GREEDY = {"max_new_tokens": 10}


@pytest.fixture(scope="module")
def exported(tiny_lm, tmp_path_factory):
    return export_gguf(tiny_lm, tmp_path_factory.mktemp("gguf") / "tiny", quant="F16")


@pytest.fixture(scope="module")
def engine(exported):
    lm = omnilm.load(exported, n_seq=4, n_ctx=2048)
    yield lm
    lm.close()


def ask(text: str, *media: tuple[str, object]) -> list[dict]:
    parts = [{"type": modality, modality: value} for modality, value in media]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]


def test_load_picks_llama_cpp_for_an_export_and_torch_refuses_it(exported, engine):
    assert engine.engine == "llama.cpp" and engine.modalities == ("image", "audio", "video")
    with pytest.raises(OmniError, match="engine='llama.cpp'"):
        omnilm.load(exported, engine="torch")
    with pytest.raises(OmniError, match="unknown engine 'vllm'"):
        omnilm.load(exported, engine="vllm")


def test_embedding_injection_decodes_as_token_ids(exported):
    import gguf

    reader = gguf.GGUFReader(str(exported / "model.gguf"))
    tensor = next(t for t in reader.tensors if t.name == "token_embd.weight")
    table = gguf.dequantize(tensor.data, tensor.tensor_type).reshape(-1, 32)  # (V, D): the GGUF's own embeddings
    runtime = Runtime(exported / "model.gguf", n_ctx=256, n_seq=1)
    prompt = [1, 40, 41, 42, 43, 44, 2, 1, 45]

    def greedy(feed) -> list[int]:
        runtime.forget(0)
        feed()
        out = []
        for _ in range(12):
            out.append(int(runtime.logits(-1).argmax()))
            runtime.decode_tokens([(0, len(prompt) + len(out) - 1, out[-1], True)])
        return out

    by_ids = greedy(lambda: runtime.decode_tokens([(0, i, t, i == len(prompt) - 1) for i, t in enumerate(prompt)]))
    by_embeds = greedy(lambda: runtime.decode_embeddings(0, 0, table[prompt], logits_last=True))
    runtime.close()
    assert by_ids == by_embeds and len(set(by_ids)) > 1


@pytest.mark.parametrize("media", ["text", "image", "audio", "video"])
def test_f16_export_answers_exactly_as_pytorch_greedy(tiny_lm, engine, media, red_image, wav_path, video_path):
    value = {"text": None, "image": red_image, "audio": str(wav_path), "video": str(video_path)}[media]
    messages = ask("what is this?", (media, value)) if value is not None else ask("what color is the shape?")
    expected = tiny_lm.chat(messages, **GREEDY)
    assert engine.chat(messages, **GREEDY) == expected and expected


def test_batch_stream_and_stop_strings_as_in_pytorch(tiny_lm, engine, red_image):
    conversations = [ask("hi there"), ask("what shape?", ("image", red_image)), ask("is there a circle?")]
    expected = tiny_lm.chat_batch(conversations, **GREEDY)
    assert engine.chat_batch(conversations, **GREEDY) == expected
    pieces = list(engine.stream(conversations[0], **GREEDY))
    assert len(pieces) > 1 and "".join(pieces) == expected[0]
    stop = expected[0][3:5]
    assert engine.chat(conversations[0], stop=[stop], **GREEDY) == tiny_lm.chat(conversations[0], stop=[stop], **GREEDY)
    penalised = {"repetition_penalty": 1.5, "max_new_tokens": 16}  # on generated tokens only, as transformers does
    assert engine.chat(conversations[2], **penalised) == tiny_lm.chat(conversations[2], **penalised)


def test_several_sequences_decode_in_one_batch(engine, monkeypatch):
    widths = []
    original = engine.runtime.decode_tokens
    monkeypatch.setattr(engine.runtime, "decode_tokens", lambda rows: (widths.append(len({r[0] for r in rows})),
                                                                        original(rows))[1])
    engine.chat_batch([ask(f"question {i}") for i in range(3)], max_new_tokens=6, ignore_eos=True)
    assert max(widths) == 3  # one decode call advanced three sequences


def test_more_requests_than_sequences_join_as_rows_finish(engine, monkeypatch):
    budgets = [3, 12, 5, 9, 4, 7]  # six requests, four sequences: the 5th and 6th join when rows finish
    alone = [engine.chat(ask(f"question {i}"), max_new_tokens=n, ignore_eos=True) for i, n in enumerate(budgets)]
    widths = []
    original = engine.runtime.decode_tokens
    def step_width(rows) -> int:  # sequences advanced by one token each (a step, or the prefill's last tokens)
        seqs = {r[0] for r in rows}
        return len(seqs) if len(seqs) == len(rows) else 0

    monkeypatch.setattr(engine.runtime, "decode_tokens", lambda rows: (widths.append(step_width(rows)), original(rows))[1])
    requests = [omnilm.generation.GenerationRequest(ask(f"question {i}"), omnilm.generation.GenerationSettings(
        max_new_tokens=n, ignore_eos=True)) for i, n in enumerate(budgets)]
    assert engine.generate_requests(requests) == alone
    assert max(widths) == 4  # never more rows than sequences
    # the newcomers decode beside the rows still running: all six in about the longest one's 12 tokens (one
    # batch after the other took 3 + 11 + 6 decodes)
    assert sum(1 for w in widths if w) <= max(budgets) + 2


def test_a_late_request_joins_the_running_rows_in_the_server(engine):
    from test_serve_continuous import LONG, SHORT, finish, submit

    from omnilm.serve.batching import BatchScheduler

    scheduler = BatchScheduler(engine, batch_wait_ms=0)
    try:
        long = submit(scheduler, ask(LONG), max_new_tokens=200)
        first = long.get(timeout=60)[0]  # the long answer is decoding
        assert first[0] == "delta"
        short_text, short_done = finish(submit(scheduler, ask(SHORT), max_new_tokens=3))
        long_text, long_done = finish(long)
    finally:
        scheduler.close(timeout=120)
    assert short_done < long_done  # joined at the next step, not after the long answer
    assert first[1] + long_text == engine.chat(ask(LONG), max_new_tokens=200, ignore_eos=True)
    assert short_text == engine.chat(ask(SHORT), max_new_tokens=3, ignore_eos=True)


def test_sampling_is_seeded_and_ignore_eos_fills_the_budget(engine):
    settings = {"temperature": 1.0, "top_p": 0.9, "top_k": 50, "max_new_tokens": 12, "seed": 7}
    first = engine.chat(ask("hi"), **settings)
    assert engine.chat(ask("hi"), **settings) == first
    assert {engine.chat(ask("hi"), **{**settings, "seed": s}) for s in range(4)} != {first}
    events = []
    request = omnilm.generation.GenerationRequest(ask("hi"), omnilm.generation.GenerationSettings(
        max_new_tokens=9, ignore_eos=True), sink=events.append)
    engine.generate_requests([request])
    assert events[-1][0] == "done" and events[-1][2]["completion_tokens"] == 9


def test_next_turn_reuses_the_conversation_cache(exported, engine, red_image, monkeypatch):
    turn = ask("what shape?", ("image", red_image))
    answer = engine.chat(turn, **GREEDY)
    follow_up = [*turn, {"role": "assistant", "content": answer}, {"role": "user", "content": "and its color?"}]
    fed = []
    for name in ("decode_tokens", "decode_embeddings"):
        original = getattr(engine.runtime, name)
        monkeypatch.setattr(engine.runtime, name, lambda *a, _o=original, **k: (fed.append(a), _o(*a, **k))[1])
    reply = engine.chat(follow_up, **GREEDY)
    prefill = fed[0]
    assert len(fed[0]) == 1 and prefill[0][0][1] > 20  # text only, from far into the conversation: no image again
    monkeypatch.undo()
    fresh = omnilm.load(exported, n_seq=1)
    assert fresh.chat(follow_up, **GREEDY) == reply
    fresh.close()


def test_refuses_settings_it_cannot_honour(engine):
    with pytest.raises(OmniError, match="num_beams"):
        engine.chat("hi", num_beams=2)
    with pytest.raises(OmniError, match="no_repeat_ngram_size"):
        engine.chat("hi", no_repeat_ngram_size=3)


def test_server_batches_concurrent_clients(engine):
    openai = pytest.importorskip("openai")
    from omnilm.serve import ServeSettings, create_app
    from omnilm.serve.background import BackgroundServer

    with BackgroundServer(create_app(engine, ServeSettings(max_tokens=32))) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60)
        results, errors = [], []

        def one(i: int) -> None:
            try:
                results.append(client.chat.completions.create(
                    model="tiny", messages=ask(f"question {i}"), max_tokens=8, extra_body={"ignore_eos": True}))
            except Exception as err:  # noqa: BLE001 - asserted below
                errors.append(err)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and all(r.usage.completion_tokens == 8 for r in results) and len(results) == 6
        assert server.app.state.scheduler.largest_batch > 1


# Bad input ----------------------------------------------------------------------------------------
def test_truncated_missing_and_mismatched_gguf(exported, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    data = (broken / "model.gguf").read_bytes()
    (broken / "model.gguf").write_bytes(data[: len(data) // 2])
    with pytest.raises(OmniError, match="truncated"):
        omnilm.load(broken)
    (broken / "model.gguf").unlink()
    with pytest.raises(OmniError, match="no GGUF file"):
        omnilm.load(broken)
    shutil.copy(exported / "model.gguf", broken / "model.gguf")
    manifest = json.loads((broken / MANIFEST_FILE).read_text())
    (broken / MANIFEST_FILE).write_text(json.dumps({**manifest, "n_embd": 64}))
    with pytest.raises(OmniError, match="width 32, but the media parts .* width 64"):
        omnilm.load(broken)


def test_unknown_quant_and_missing_extra(tiny_lm, tmp_path, monkeypatch):
    with pytest.raises(OmniError, match="unknown quantization 'Q3_FANCY'.*Q4_K_M"):
        export_gguf(tiny_lm, tmp_path / "out", quant="Q3_FANCY")
    assert not (tmp_path / "out").exists()
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(OmniError, match="needs llama-cpp-python") as err:
        omnilm.load(tmp_path, engine="llama.cpp")
    assert INSTALL_COMMAND in str(err.value)


def test_quantized_export_is_smaller_and_still_loads(tiny_lm, exported, tmp_path):
    out = export_gguf(tiny_lm, tmp_path / "q8", quant="Q8_0")
    lm = omnilm.load(out)
    assert lm.chat("hi", **GREEDY) and json.loads((out / MANIFEST_FILE).read_text())["quant"] == "Q8_0"
    lm.close()
    assert (out / "model.gguf").stat().st_size < (exported / "model.gguf").stat().st_size


@pytest.mark.parametrize("lora", ["merged", "adapter"])
def test_lora_merged_or_as_an_adapter_answers_as_pytorch(tmp_path, red_image, lora):
    import torch

    from omnilm.lora import attach_lora
    from omnilm.testing import tiny_model

    lm = tiny_model(("image",))
    attach_lora(lm.model, {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]})
    lm.config.lora = {"r": 4}  # what the training stage records: the model carries adapters
    with torch.no_grad():  # a trained-looking adapter, large enough to change the answers
        for name, param in lm.model.llm.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    out = export_gguf(lm, tmp_path / lora, quant="F16", lora=lora)
    files = {p.name for p in out.iterdir()}
    assert ("adapter.gguf" in files) == (lora == "adapter")
    assert json.loads((out / MANIFEST_FILE).read_text())["lora"] == ("adapter.gguf" if lora == "adapter" else "merged")
    conversations = (ask("what shape?", ("image", red_image)), ask("hello there"))
    with lm.model.llm.disable_adapter():
        without = [lm.chat(c, **GREEDY) for c in conversations]
    cpp = omnilm.load(out)
    try:
        answers = [cpp.chat(c, **GREEDY) for c in conversations]
    finally:
        cpp.close()
    assert answers == [lm.chat(c, **GREEDY) for c in conversations] and answers != without  # the adapter counts
    stripped = lm.model.llm.get_base_model()
    assert any("lora_A" in n for n, _ in stripped.named_parameters())  # the caller's model keeps its adapters


def test_gated_cross_attention_is_refused_before_writing(tmp_path):
    from omnilm.config import FusionConfig
    from omnilm.testing import tiny_model

    lm = tiny_model(("image",), "perceiver", connector_options={"num_latents": 4, "depth": 1, "heads": 4},
                    fusion=FusionConfig(mode="gated_xattn", every=1, heads=4))
    with pytest.raises(OmniError, match="gated_xattn.*PyTorch engine"):
        export_gguf(lm, tmp_path / "out", quant="F16")
    assert not (tmp_path / "out").exists()
