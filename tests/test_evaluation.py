"""Task harness on a tiny random model: mechanics only (a random model answers garbage)."""

from __future__ import annotations

import argparse
import json

import pytest
from PIL import Image

from omnilm.errors import OmniError
from omnilm.evaluation import TaskError, builtin_tasks, evaluate, load_task
from omnilm.evaluation.endpoint import to_openai_messages
from omnilm.evaluation.runner import PREDICTIONS
from stub_openai import stub_openai_server


@pytest.fixture(scope="module")
def lm():
    from omnilm.testing import tiny_model

    return tiny_model(("image",))


@pytest.fixture()
def no_meteor(monkeypatch):
    """Skip the METEOR jar (seconds per call); its equality with the reference is tested elsewhere."""
    import omnilm.metrics

    monkeypatch.setattr(omnilm.metrics, "meteor_unavailable", lambda: "switched off in this test")


@pytest.fixture()
def task_file(tmp_path):
    """A 7-item shape task with categories, in its own folder."""
    colors = ["red", "blue", "green", "red", "blue", "green", "red"]
    rows = []
    for i, color in enumerate(colors):
        Image.new("RGB", (32, 32), color).save(tmp_path / f"{i}.png")
        rows.append({"id": f"q{i}", "image": f"{i}.png", "category": "color" if i % 2 else "other",
                     "conversations": [{"from": "human", "value": "<image>\nWhat colour is it?"},
                                       {"from": "gpt", "value": color}]})
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "task.yaml").write_text(
        "name: colours\ndata: data.jsonl\nprompt: \"{text}\\nOne word.\"\n"
        "generation: {max_new_tokens: 4, temperature: 0}\npostprocess: [first_line, strip, lower]\n"
        "metrics: [vqa_accuracy, exact_match]\nconfusion_matrix: true\nbatch_size: 3\n"
    )
    return tmp_path / "task.yaml"


class Counting:
    """Wraps a model; counts generated items and can fail after some batches (an interruption)."""

    def __init__(self, lm, fail_after=None):
        self.lm, self.fail_after, self.items, self.batches = lm, fail_after, 0, 0
        self.name, self.modalities = lm.name, lm.modalities

    def chat_batch(self, conversations, **gen):
        if self.fail_after is not None and self.batches >= self.fail_after:
            raise KeyboardInterrupt
        self.batches += 1
        self.items += len(conversations)
        return self.lm.chat_batch(conversations, **gen)


def test_run_writes_results_report_and_confusion_matrix(lm, task_file, tmp_path):
    out = tmp_path / "out"
    results = evaluate(lm, task_file, out, progress=False)
    assert results["num_items"] == 7 and set(results["metrics"]) == {"vqa_accuracy", "exact_match"}
    assert set(results["by_category"]) == {"color", "other"}
    assert results["by_category"]["other"]["count"] == 4
    for name in ("predictions.jsonl", "results.json", "report.md", "confusion_matrix.png", "run.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "results.json").read_text())["metrics"] == results["metrics"]
    report = (out / "report.md").read_text()
    assert "## By category" in report and "confusion_matrix.png" in report
    labels = results["confusion_matrix"]["labels"]
    assert labels[:3] == ["blue", "green", "red"]
    assert sum(map(sum, results["confusion_matrix"]["counts"])) == 7
    lines = [json.loads(line) for line in (out / PREDICTIONS).read_text().splitlines()]
    assert [line["id"] for line in lines] == [f"q{i}" for i in range(7)]


def test_interrupted_run_resumes_without_recomputing(lm, task_file, tmp_path):
    reference = evaluate(lm, task_file, tmp_path / "full", progress=False)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        evaluate(Counting(lm, fail_after=1), task_file, out, progress=False)
    assert len((out / PREDICTIONS).read_text().splitlines()) == 3  # one batch of 3 was saved
    with (out / PREDICTIONS).open("a") as f:
        f.write('{"id": "q3", "raw": "tor')  # a write torn by a crash
    second = Counting(lm)
    results = evaluate(second, task_file, out, progress=False)
    assert second.items == 4 and results["generated_items"] == 4  # only the unfinished items
    assert results["metrics"] == reference["metrics"]
    assert (out / PREDICTIONS).read_text() == (tmp_path / "full" / PREDICTIONS).read_text()  # deterministic
    third = Counting(lm)
    evaluate(third, task_file, out, progress=False)
    assert third.items == 0


def test_changed_settings_refuse_to_mix_runs(lm, task_file, tmp_path):
    evaluate(lm, task_file, tmp_path / "out", limit=2, progress=False)
    task = load_task(task_file)
    task.generation = {**task.generation, "max_new_tokens": 5}
    with pytest.raises(OmniError, match="changed: generation"):
        evaluate(lm, task, tmp_path / "out", progress=False)


def test_missing_modality_is_a_clear_error(task_file, tmp_path):
    class TextOnly:
        name, modalities = "text-only", ()

    with pytest.raises(OmniError, match="needs image input"):
        evaluate(TextOnly(), task_file, tmp_path / "out", progress=False)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("data: d.jsonl\n", "'name'"),
        ("name: t\n", "'data'"),
        ("name: t\ndata: d.jsonl\nmetrics: [bleu]\n", "'metrics'"),
        ("name: t\ndata: d.jsonl\nmetrcs: [exact_match]\n", "'metrcs'"),
        ("name: t\ndata: d.jsonl\ngeneration: {max_tokens: 3}\n", "'generation.max_tokens'"),
        ("name: t\ndata: d.jsonl\ngeneration: {max_new_tokens: -1}\n", "'generation.max_new_tokens'"),
        ("name: t\ndata: d.jsonl\npostprocess: [shout]\n", "'postprocess'"),
        ("name: t\ndata: d.jsonl\nprompt: '{}'\n", "'prompt'"),
        ("name: t\ndata: {dataset: nope, file: x.jsonl}\n", "'data.dataset'"),
        ("name: t\ndata: d.jsonl\nbatch_size: 0\n", "'batch_size'"),
        ("name: [t\n", "not valid YAML"),
    ],
)
def test_bad_task_files_name_the_field(tmp_path, text, field):
    (tmp_path / "t.yaml").write_text(text)
    with pytest.raises(TaskError, match=field.replace("[", r"\[").replace(".", r"\.")):
        load_task(tmp_path / "t.yaml")


def test_unknown_task_lists_builtins():
    assert builtin_tasks() == ["easy-vqa", "easy-vqa-spoken", "easy-vqa-video", "shapes-caption"]
    with pytest.raises(TaskError, match="easy-vqa, easy-vqa-spoken, easy-vqa-video, shapes-caption"):
        load_task("no-such-task")


@pytest.fixture()
def data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("OMNILM_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def test_builtin_easy_vqa_and_captions(lm, data_root, tmp_path, no_meteor):
    results = evaluate(lm, "easy-vqa", tmp_path / "vqa", limit=12, progress=False)
    assert (data_root / "easy-vqa" / "test.jsonl").is_file()  # built on first use
    assert set(results["by_category"]) <= {"shape", "color", "yesno"} and results["num_items"] == 12
    assert 0.0 <= results["metrics"]["vqa_accuracy"] <= 1.0
    captions = evaluate(lm, "shapes-caption", tmp_path / "cap", limit=6, progress=False)
    assert {"BLEU-4", "ROUGE-L", "CIDEr", "exact_match"} <= set(captions["metrics"])
    assert "METEOR" in captions["unavailable"] and "METEOR" in (tmp_path / "cap" / "report.md").read_text()


@pytest.mark.requires_tool("espeak-ng")
def test_builtin_spoken_task(data_root, tmp_path):
    from omnilm.data.easy_vqa import TEST_VOICES, build_easy_vqa_spoken
    from omnilm.testing import tiny_model

    build_easy_vqa_spoken(data_root / "easy-vqa-spoken", limit=6)
    results = evaluate(tiny_model(("image", "audio")), "easy-vqa-spoken", tmp_path / "out", progress=False)
    assert results["num_items"] == 6
    voices = {json.loads(line)["voice"] for line in (data_root / "easy-vqa-spoken" / "spoken-test.jsonl").open()}
    assert voices <= set(TEST_VOICES)


def test_data_and_eval_commands(lm, tmp_path, capsys, no_meteor):
    from omnilm.cli import data as data_cli
    from omnilm.cli import eval as eval_cli

    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    data_cli.register(subparsers)
    eval_cli.register(subparsers)
    args = parser.parse_args(["data", "easy-vqa", str(tmp_path / "ds"), "--splits", "test", "--limit", "9"])
    assert args.func(args) == 0
    assert "test.jsonl: 9 records" in capsys.readouterr().out
    lm.save(tmp_path / "model")
    task = tmp_path / "t.yaml"
    task.write_text(f"name: t\ndata: {tmp_path / 'ds' / 'test.jsonl'}\nmetrics: [exact_match]\n"
                    "generation: {max_new_tokens: 3}\n")
    args = parser.parse_args(["eval", str(tmp_path / "model"), "--task", str(task), "--limit", "4",
                              "--out", str(tmp_path / "out"), "--no-progress"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "exact_match" in printed and "report.md" in printed
    assert len((tmp_path / "out" / PREDICTIONS).read_text().splitlines()) == 4


def test_openai_message_conversion(tmp_path):
    Image.new("RGB", (4, 4), "red").save(tmp_path / "x.png")
    (tmp_path / "x.wav").write_bytes(b"RIFF....WAVE")
    messages = [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                {"role": "user", "content": [{"type": "image", "image": str(tmp_path / "x.png")},
                                             {"type": "audio", "audio": str(tmp_path / "x.wav")},
                                             {"type": "text", "text": "What?"}]}]
    system, user = to_openai_messages(messages)
    assert system == {"role": "system", "content": "Be brief."}
    image, audio, text = user["content"]
    assert image["image_url"]["url"].startswith("data:image/png;base64,")
    assert audio == {"type": "input_audio", "input_audio": {"data": "UklGRi4uLi5XQVZF", "format": "wav"}}
    assert text == {"type": "text", "text": "What?"}


@pytest.fixture()
def stub_server():
    """A minimal OpenAI-compatible server that answers the colour of the first image it is sent."""
    import base64
    import io

    def colour(request: dict) -> str:
        url = next(p["image_url"]["url"] for p in request["messages"][-1]["content"] if p["type"] == "image_url")
        pixel = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB").getpixel((0, 0))
        return {(255, 0, 0): "Red.", (0, 0, 255): "blue", (0, 128, 0): "green"}.get(pixel, "?")

    with stub_openai_server(colour) as served:
        yield served


def test_endpoint_mode(stub_server, task_file, tmp_path):
    from omnilm.evaluation import EndpointModel

    url, requests = stub_server
    model = EndpointModel(url)
    assert model.model == "stub"
    results = evaluate(model, task_file, tmp_path / "out", progress=False)
    # The stub reads the colour off the image, so the harness's plumbing (data URLs, order, clean-up) shows.
    assert results["metrics"]["exact_match"] == 1.0 and results["metrics"]["vqa_accuracy"] == 1.0
    assert len(requests) == 7 and requests[0]["max_tokens"] == 4 and requests[0]["temperature"] == 0
    assert requests[0]["messages"][-1]["content"][-1] == {"type": "text", "text": "What colour is it?\nOne word."}


def test_eval_against_omnilm_serve(lm, task_file, tmp_path):
    """`omnilm eval --endpoint` against the real server (uvicorn in a thread, tiny model)."""
    import socket
    import threading
    import time

    uvicorn = pytest.importorskip("uvicorn")
    from omnilm.evaluation import EndpointModel
    from omnilm.serve.app import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(lm), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        model = EndpointModel(f"http://127.0.0.1:{port}", timeout=60, max_retries=0)
        results = evaluate(model, task_file, tmp_path / "served", progress=False)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert results["num_items"] == 7 and results["model"].startswith(lm.name)
    lines = (tmp_path / "served" / PREDICTIONS).read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [f"q{i}" for i in range(7)]
    assert (tmp_path / "served" / "report.md").is_file()
