"""The built-in benchmark tasks, run on fixtures in each dataset's real schema (the hub is never reached:
`datasets.load_dataset(id, name, split=...)` is answered with the fixture), locally and over an endpoint."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import soundfile
from PIL import Image

from omnilm.cli.main import main
from omnilm.errors import OmniError
from omnilm.evaluation import evaluate, load_task
from stub_openai import stub_openai_server


def png(color: str) -> dict:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def flac() -> dict:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(1600, np.float32), 16000, format="FLAC")
    return {"bytes": buffer.getvalue(), "path": "1089-134686-0000.flac"}


def vqa_answers(*answers: str) -> list[dict]:
    return [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)]


# Rows in each dataset's schema; every question says what the scripted model replies ("say ...").
FIXTURES = {
    ("lmms-lab/VQAv2", None, "validation"): [
        {"question_type": "how many", "multiple_choice_answer": "2", "answers": vqa_answers(*["2"] * 10),
         "image_id": 1, "answer_type": "number", "question_id": 11, "question": "How many? say Two", "image": png("red")},
        {"question_type": "what", "multiple_choice_answer": "dog", "answers": vqa_answers(*["dog"] * 2, *["cat"] * 8),
         "image_id": 2, "answer_type": "other", "question_id": 12, "question": "What? say dog", "image": png("blue")}],
    ("lmms-lab/GQA", "testdev_balanced_instructions", "testdev"): [
        {"id": "g1", "imageId": "n1", "question": "Colour? say Red.", "answer": "red", "fullAnswer": "It is red.",
         "isBalanced": True, "groups": {"global": None, "local": "c"}, "entailed": "", "equivalent": "",
         "types": {"structural": "query", "semantic": "attr", "detailed": "color"}, "annotations": {}, "semantic": [],
         "semanticStr": ""},
        {"id": "g2", "imageId": "n2", "question": "Left? say no", "answer": "yes", "fullAnswer": "Yes.",
         "isBalanced": True, "groups": {"global": None, "local": "v"}, "entailed": "", "equivalent": "",
         "types": {"structural": "verify", "semantic": "rel", "detailed": "x"}, "annotations": {}, "semantic": [],
         "semanticStr": ""}],
    ("lmms-lab/GQA", "testdev_balanced_images", "testdev"): [
        {"id": "n2", "image": png("blue")}, {"id": "n1", "image": png("red")}],
    ("lmms-lab/POPE", None, "test"): [
        {"id": str(i), "question_id": str(i), "question": f"Is there a dog? say {reply}", "answer": label,
         "image_source": "COCO_val2014", "image": png("red"), "category": category}
        for i, (reply, label, category) in enumerate([("Yes, there is.", "yes", "random"), ("No.", "no", "random"),
                                                      ("Yes", "no", "adversarial"), ("no", "yes", "adversarial")])],
    ("lmms-lab/MME", None, "test"): [
        {"question_id": f"{category}/{image}.png", "image": png("red"), "category": category, "answer": label,
         "question": f"Is it so? Please answer yes or no. say {reply}"}
        for category, image, label, reply in [("existence", "a", "Yes", "Yes"), ("existence", "a", "No", "No"),
                                              ("existence", "b", "Yes", "Yes"), ("existence", "b", "No", "Yes"),
                                              ("code_reasoning", "c", "Yes", "maybe"), ("code_reasoning", "c", "No", "No")]],
    ("lmms-lab/ScienceQA", "ScienceQA-IMG", "test"): [
        {"image": png("red"), "question": "Which is a mammal? say B", "choices": ["frog", "whale", "trout"],
         "answer": 1, "hint": "", "task": "closed choice", "grade": "grade4", "subject": "natural science",
         "topic": "biology", "category": "Classify", "skill": "x", "lecture": "", "solution": ""},
        {"image": png("red"), "question": "Which is hot? say (A)", "choices": ["ice", "lava"], "answer": 1,
         "hint": "Think of volcanoes.", "task": "closed choice", "grade": "grade2", "subject": "physics",
         "topic": "heat", "category": "Temp", "skill": "x", "lecture": "", "solution": ""}],
    ("lmms-lab/MMMU", None, "validation"): [
        {"id": "validation_Art_1", "question": "<image 1> <image 2> Which? say The answer is (C).",
         "options": "['a', 'b', 'c', 'd']", "explanation": "", "image_1": png("red"), "image_2": png("blue"),
         **{f"image_{i}": None for i in range(3, 8)}, "img_type": "['Painting']", "answer": "C",
         "topic_difficulty": "Easy", "question_type": "multiple-choice", "subfield": "Art History"},
        {"id": "validation_Math_2", "question": "<image 1> Compute x. say 4", "options": "[]", "explanation": "",
         "image_1": png("red"), **{f"image_{i}": None for i in range(2, 8)}, "img_type": "['Plot']", "answer": "4",
         "topic_difficulty": "Hard", "question_type": "open", "subfield": "Calculus"}],
    ("lmms-lab/textvqa", None, "validation"): [
        {"image_id": "0054c91397f2fe05", "question_id": 0, "question": "What brand? say Nokia", "question_tokens": [],
         "image": png("red"), "image_width": 8, "image_height": 8, "flickr_original_url": "", "flickr_300k_url": "",
         "answers": ["nokia"] * 9 + ["toshiba"], "image_classes": ["phone"], "set_name": "val",
         "ocr_tokens": ["NOKIA"]}],
    ("lmms-lab/NoCaps", None, "validation"): [
        {"image": png("red"), "image_coco_url": "http://x", "image_date_captured": "2018", "image_file_name": "0.jpg",
         "image_height": 8, "image_width": 8, "image_id": 0, "image_license": 0, "image_open_images_id": "abc",
         "annotations_ids": list(range(10)), "annotations_captions": ["a red square"] * 10}],
    ("lmms-lab/ChartQA", None, "test"): [
        {"type": "human_test", "question": "Value? say 10.4", "answer": "10", "image": png("red")},
        {"type": "augmented_test", "question": "Country? say Peru", "answer": "Chile", "image": png("red")}],
    ("lmms-lab/DocVQA", "DocVQA", "validation"): [
        {"questionId": "337", "question": "Who? say ITC Limited", "question_types": ["handwritten"], "image": png("red"),
         "docId": 279, "ucsf_document_id": "txpp0227", "ucsf_document_page_no": "10", "answers": ["itc limited"],
         "data_split": "val"},
        {"questionId": "338", "question": "When? say 199", "question_types": ["form"], "image": png("red"),
         "docId": 280, "ucsf_document_id": "txpp0228", "ucsf_document_page_no": "1", "answers": ["1995"],
         "data_split": "val"}],
    ("lmms-lab/COCO-Caption2017", None, "val"): [
        {"question_id": "000000179765.jpg", "image": png("red"), "question": "Please carefully observe the image.",
         "answer": ["a red square", "red square", "a square that is red", "a red block", "red"],
         "id": 38, "license": 3, "file_name": "000000179765.jpg", "coco_url": "http://x", "height": 8, "width": 8,
         "date_captured": "2013"}],
    ("openslr/librispeech_asr", "clean", "test"): [
        {"file": "1089-134686-0000.flac", "audio": flac(), "text": "HE HOPED THERE WOULD BE STEW FOR DINNER",
         "speaker_id": 1089, "chapter_id": 134686, "id": "1089-134686-0000"}],
    ("nlphuji/flickr_1k_test_image_text_retrieval", None, "test"): [
        {"image": png(color), "caption": [f"a {color} picture", f"something {color}"], "sentids": ["0", "1"],
         "split": "test", "img_id": str(i), "filename": f"{i}.jpg"} for i, color in enumerate(["red", "blue", "green"])],
}
CASTS = {"image": "Image", "image_1": "Image", "image_2": "Image", "audio": "Audio"}


def hub_dataset(rows: list[dict]):
    import datasets

    dataset = datasets.Dataset.from_list(rows)
    for column, feature in CASTS.items():
        if column in dataset.column_names:
            dataset = dataset.cast_column(column, getattr(datasets, feature)())
    return dataset


@pytest.fixture()
def hub(monkeypatch, tmp_path):
    """`datasets.load_dataset` answering hub ids with the fixtures (each in its dataset's schema)."""
    import datasets

    calls = []

    def load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        if (path, name, split) not in FIXTURES:
            raise FileNotFoundError(f"Dataset {path!r} ({name}, {split}) does not exist on the Hub (test)")
        return hub_dataset(FIXTURES[(path, name, split)])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setenv("OMNILM_DATA", str(tmp_path / "data"))
    return calls


def scripted(messages: list[dict]) -> str:
    """The reply the question asks for ("... say X")."""
    text = "".join(p["text"] for p in messages[-1]["content"] if p["type"] == "text")
    match = re.search(r"say (.*?)(?:\n|$)", text)
    return match.group(1) if match else "a red square"


class ScriptedModel:
    name = "scripted"
    modalities = ("image", "audio", "video")

    def __init__(self):
        self.prompts = []

    def chat_batch(self, conversations, **gen):
        self.prompts += conversations
        return [scripted(messages) for messages in conversations]


@pytest.mark.parametrize(("task", "expected"), [
    ("vqav2", {"vqa_accuracy": (1.0 + 0.6) / 2, "exact_match": 0.5}),  # "Two" → "2"; "dog": 2 of 10 answers
    ("gqa", {"exact_match": 0.5}),
    ("pope", {"pope_accuracy": 0.5, "pope_precision": 0.5, "pope_recall": 0.5, "pope_f1": 0.5, "pope_yes_ratio": 0.5}),
    ("mme", {"mme_existence": 75.0 + 50.0, "mme_code_reasoning": 50.0 + 0.0, "mme_perception": 125.0,
             "mme_cognition": 50.0}),
    ("scienceqa-img", {"choice_accuracy": 0.5}),
    ("mmmu", {"choice_accuracy": 1.0}),  # the open question is filtered out
    ("textvqa", {"vqa_accuracy": 1.0}),
    ("chartqa", {"relaxed_accuracy": 0.5}),
    ("docvqa", {"anls": (1.0 + 0.75) / 2}),  # "199" against "1995": 1 - 1/4
    ("librispeech-test-clean", {"wer_whisper": 1.0}),
])
def test_builtin_task_on_a_fixture_in_the_real_schema(task, expected, hub, tmp_path):
    model = ScriptedModel()
    results = evaluate(model, task, tmp_path / task, progress=False)
    for name, value in expected.items():
        assert results["metrics"][name] == pytest.approx(value), (name, results["metrics"])
    report = (tmp_path / task / "report.md").read_text()
    spec = load_task(task)
    assert f"Prompt: `{json.dumps(spec.prompt)}`" in report and "Answer parsing:" in report


def test_prompts_carry_the_options_hints_and_every_image(hub, tmp_path):
    model = ScriptedModel()
    evaluate(model, "scienceqa-img", tmp_path / "sqa", progress=False)
    first = model.prompts[0][-1]["content"]
    assert first[-1]["text"] == ("Which is a mammal? say B\nA. frog\nB. whale\nC. trout\n"
                                 "Answer with the option's letter from the given choices directly.")
    assert model.prompts[1][-1]["content"][-1]["text"].startswith("Think of volcanoes.\nWhich is hot?")
    model = ScriptedModel()
    results = evaluate(model, "mmmu", tmp_path / "mmmu", progress=False)
    assert results["num_items"] == 1 and [p["type"] for p in model.prompts[0][-1]["content"]] == ["image", "image",
                                                                                                   "text"]


def test_pope_reports_each_negative_sampling_split(hub, tmp_path):
    results = evaluate(ScriptedModel(), "pope", tmp_path / "pope", progress=False)
    assert results["by_category"]["random"]["pope_accuracy"] == 1.0
    assert results["by_category"]["adversarial"]["pope_accuracy"] == 0.0


def test_gqa_joins_its_images_by_id(hub, tmp_path):
    model = ScriptedModel()
    evaluate(model, "gqa", tmp_path / "gqa", progress=False)
    image = model.prompts[0][-1]["content"][0]["image"]
    assert Image.open(io.BytesIO(image)).getpixel((0, 0)) == (255, 0, 0)  # imageId n1 is the red one
    assert ("lmms-lab/GQA", "testdev_balanced_images", "testdev") in hub


@pytest.mark.parametrize("task", ["coco-caption", "nocaps", "flickr30k-caption"])
def test_captions_score_with_coco_metrics(task, hub, tmp_path, monkeypatch):
    import omnilm.metrics

    monkeypatch.setattr(omnilm.metrics, "meteor_unavailable", lambda: "switched off in this test")
    results = evaluate(ScriptedModel(), task, tmp_path / task, progress=False)  # replies "a red square"
    assert "CIDEr" in results["metrics"]
    assert results["num_items"] == {"coco-caption": 1, "nocaps": 1, "flickr30k-caption": 3}[task]
    if task != "flickr30k-caption":  # every reference says "a red square"
        assert results["metrics"]["BLEU-1"] == pytest.approx(1.0)


def test_video_task_samples_its_frames(hub, tmp_path, monkeypatch):
    import av

    import datasets

    root = tmp_path / "data" / "mvbench" / "ssv2_video_mp4"
    root.mkdir(parents=True)
    with av.open(str(root / "clip.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=6)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(12):
            frame = np.full((32, 32, 3), i * 20, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    rows = [{"video": "clip.mp4", "question": "What happens? say (B)", "candidates": ["falling", "rising"],
             "answer": "rising"}]
    monkeypatch.setitem(FIXTURES, ("OpenGVLab/MVBench", "action_antonym", "train"), rows)
    assert datasets.load_dataset("OpenGVLab/MVBench", "action_antonym", split="train").num_rows == 1
    model = ScriptedModel()
    results = evaluate(model, "mvbench-action-antonym", tmp_path / "mv", progress=False)
    assert results["metrics"]["choice_accuracy"] == 1.0
    video = model.prompts[0][-1]["content"][0]["video"]
    assert isinstance(video, list) and len(video) == 8  # the task's video_frames, sampled before the model


def test_retrieval_task_ranks_a_dual_encoders_embeddings(hub, tmp_path):
    colors = {"red": 0, "blue": 1, "green": 2}

    class ColourDual:
        name = "colour-dual"

        def embed_images(self, items):
            return np.eye(3)[[colors[{(255, 0, 0): "red", (0, 0, 255): "blue", (0, 128, 0): "green"}[
                Image.open(io.BytesIO(item)).convert("RGB").getpixel((0, 0))]] for item in items]]

        def embed_texts(self, texts):
            return np.eye(3)[[colors[next(c for c in colors if c in t)] for t in texts]]

    results = evaluate(ColourDual(), "flickr30k-retrieval", tmp_path / "ret", progress=False)
    assert results["num_captions"] == 6
    assert results["metrics"]["image_to_text/R@1"] == 1.0 and results["metrics"]["text_to_image/R@1"] == 1.0
    with pytest.raises(OmniError, match="dual encoder"):
        evaluate(ScriptedModel(), "flickr30k-retrieval", tmp_path / "ret2", progress=False)


def test_missing_column_and_unknown_dataset_are_clear_errors(hub, tmp_path):
    task = tmp_path / "bad.yaml"
    task.write_text("name: bad\ndata: {hub: lmms-lab/ChartQA, split: test, columns: {images: img, text: question}}\n")
    with pytest.raises(OmniError, match=r"columns.images names column 'img'.*its columns are type, question"):
        evaluate(ScriptedModel(), task, tmp_path / "out", progress=False)
    task.write_text("name: bad\ndata: {hub: someone/nothing, split: test, columns: {text: q}}\n")
    with pytest.raises(OmniError, match="could not load someone/nothing"):
        evaluate(ScriptedModel(), task, tmp_path / "out2", progress=False)


@pytest.fixture()
def stub_server():
    """An OpenAI-compatible server replying what each question asks for (after "say ")."""

    def reply(request: dict) -> str:
        content = request["messages"][-1]["content"]
        return scripted([{"content": [p for p in content if p["type"] == "text"]}])

    with stub_openai_server(reply) as served:
        yield served


def test_eval_vqav2_with_limit_against_an_openai_compatible_endpoint(hub, stub_server, tmp_path, capsys):
    url, requests = stub_server
    out = tmp_path / "vqav2-endpoint"
    assert main(["eval", "--endpoint", url, "--task", "vqav2", "--limit", "1", "--out", str(out),
                 "--no-progress"]) == 0
    assert len(requests) == 1 and "vqa_accuracy" in capsys.readouterr().out
    image = requests[0]["messages"][-1]["content"][0]
    assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/png;base64,")
    results = json.loads((out / "results.json").read_text())
    assert results["num_items"] == 1 and results["metrics"]["vqa_accuracy"] == 1.0
    assert results["prompt"] == load_task("vqav2").prompt and "vqa_accuracy" in results["parsers"]


def test_benchmarks_are_listed_apart_from_the_offline_tasks():
    from omnilm.evaluation import TaskError, benchmark_tasks

    names = benchmark_tasks()
    for name in ("vqav2", "gqa", "textvqa", "pope", "mme", "scienceqa-img", "mmmu", "chartqa", "docvqa",
                 "coco-caption", "nocaps", "flickr30k-caption", "flickr30k-retrieval", "librispeech-test-clean",
                 "librispeech-test-other", "mvbench-action-antonym"):
        assert name in names and load_task(name).eval_data is not None
    with pytest.raises(TaskError, match="benchmarks: chartqa, coco-caption"):
        load_task("no-such-task")
