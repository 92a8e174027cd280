"""The quickstart's orchestration on a tiny model: steps run once, resume, and the table (seconds)."""

import json
import shutil
from collections import Counter

import pytest

from omnilm.errors import OmniError
from omnilm.quickstart import (
    Steps,
    balance,
    build_data,
    check_paired,
    is_negated,
    load_recipe,
    paired_order,
    question_type,
    results_table,
    results_warnings,
    run_quickstart,
    single_turn,
    timings_table,
)


def record(i, question, answer, category="yesno"):
    """An easy-VQA-shaped training record about one image."""
    return {"id": i, "category": category, "conversations": [{"from": "human", "value": f"<image>\n{question}"},
                                                              {"from": "gpt", "value": answer}]}


def test_steps_run_once_and_resume_after_a_failure(tmp_path):
    calls = []

    def fail():
        calls.append("b")
        raise KeyboardInterrupt

    steps = Steps(tmp_path / "state.json")
    assert steps.run("a", lambda: calls.append("a") or 1) == 1
    with pytest.raises(KeyboardInterrupt):
        steps.run("b", fail)
    again = Steps(tmp_path / "state.json")  # a new process: "a" is done, "b" is not
    assert "b" in again.state["_interrupted"] and "b" not in again.seconds()
    assert again.run("a", lambda: calls.append("a") or 2) == 1
    assert again.run("b", lambda: calls.append("b2") or 3) == 3
    assert calls == ["a", "b", "b2"] and set(again.seconds()) == {"a", "b"}


def test_single_turn_asks_each_question_alone_as_the_evaluation_does():
    records = [{"image": f"i{k % 2}.png", "conversations": [{"from": "human", "value": f"<image>\nis q{k}?"},
                                                            {"from": "gpt", "value": f"a{k}"}]} for k in range(3)]
    rows = single_turn(records, "\nOne word.")
    assert [r["conversations"] for r in rows] == [
        [{"from": "human", "value": "<image>\nis q0?\nOne word."}, {"from": "gpt", "value": "a0"}],
        [{"from": "human", "value": "<image>\nIs q1?\nOne word."}, {"from": "gpt", "value": "a1"}],  # as Whisper writes
        [{"from": "human", "value": "<image>\nis q2?\nOne word."}, {"from": "gpt", "value": "a2"}],
    ]
    assert [r["image"] for r in rows] == ["i0.png", "i1.png", "i0.png"]


def test_balance_keeps_open_questions_balances_yes_no_answers_per_question_type_and_thins_negated_ones():
    colours = ["red", "teal", "blue", "gray"]
    records = [record(i, f"is there a {colours[i % 4]} shape?", "yes" if i % 8 == 0 else "no") for i in range(80)]
    records += [record(100 + i, f"is there not a {colours[i % 4]} shape?", "no" if i % 4 == 0 else "yes")
                for i in range(40)]
    records += [record(200 + i, "what color is the shape?", "red", "color") for i in range(5)]
    kept = balance(records, seed=0)
    answers = Counter((r["conversations"][0]["value"].split()[3], r["conversations"][1]["value"]) for r in kept
                      if r["category"] == "yesno")
    assert answers == {("a", "yes"): 10, ("a", "no"): 10, ("not", "no"): 10, ("not", "yes"): 10}
    assert [r for r in kept if r["category"] == "color"] == records[-5:]
    assert [r["id"] for r in kept if r["conversations"][1]["value"] == "yes" and r["id"] < 100] == list(range(0, 80, 8))
    assert kept == balance(records, seed=0) != balance(records, seed=1)
    halved = balance(records + [record(300 + i, "what shape is it?", "circle", "shape") for i in range(400)], 0, 0.5)
    assert 150 < sum(r["category"] != "yesno" for r in halved) < 250
    assert sum(r["category"] == "yesno" for r in halved) == 40  # the yes/no balance does not change
    fewer_negated = balance(records, 0, negated_fraction=0.5)
    answers = Counter((r["conversations"][0]["value"].split()[3], r["conversations"][1]["value"]) for r in fewer_negated
                      if r["category"] == "yesno")
    assert answers == {("a", "yes"): 10, ("a", "no"): 10, ("not", "no"): 5, ("not", "yes"): 5}
    assert [is_negated(q) for q in ("Is no teal shape present?", "does the image not contain a circle?",
                                    "is there a notebook?", "Is there a red shape?")] == [True, True, False, False]
    masked = question_type("<image>\nDoes the image not contain a Triangle?")
    assert masked == "<image>\ndoes the image not contain a {shape}?"


def test_paired_order_puts_each_yes_no_question_beside_its_complement_with_the_other_answer():
    records = [record(i, f"is there a {('red', 'blue')[i % 2]} shape?", "yes" if i < 6 else "no") for i in range(14)]
    records += [record(100 + i, "what color is the shape?", "red", "color") for i in range(5)]
    ordered = paired_order(records, seed=0)
    assert sorted(r["id"] for r in ordered) == sorted(r["id"] for r in records)
    pairs = [(ordered[i], ordered[i + 1]) for i in range(0, len(ordered) - 1, 2)]
    complementary = [(a, b) for a, b in pairs if a["category"] == b["category"] == "yesno"
                     and a["conversations"][0] == b["conversations"][0]]
    assert len(complementary) == 6  # 3 "yes" per question, each paired with a "no"
    assert all({a["conversations"][1]["value"], b["conversations"][1]["value"]} == {"yes", "no"}
               for a, b in complementary)
    assert ordered == paired_order(records, seed=0) != paired_order(records, seed=1)


def test_paired_recipe_needs_the_file_order_and_even_batches(tmp_path):
    recipe = load_recipe()
    check_paired(recipe["train"])  # the committed recipe keeps its pairs together
    for key, value in (("data", {"shuffle": True}), ("optim", {"batch_size": 7})):
        with pytest.raises(OmniError, match="paired: true needs"):
            run_quickstart(tmp_path, {**recipe, "train": {**recipe["train"], key: value}})


def test_build_data_adds_captions_and_repeat_samples_when_asked(tmp_path):
    def record(i, prompt, answer, category):
        return {"id": f"r{i}", "image": f"images/train/{i}.png", "category": category,
                "conversations": [{"from": "human", "value": f"<image>\n{prompt}"}, {"from": "gpt", "value": answer}]}

    questions = [record(i, "what color is the shape?", "red", "color") for i in range(4)]
    caption = record(9, "Describe the image.", "a red circle", "circle")
    for name, rows in (("train", questions), ("test", questions), ("shapes-caption-train", [caption])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    kwargs = dict(limit=2, seed=0, speech=False, suffix="\nOne word.")
    plain = build_data(tmp_path, **kwargs)
    assert plain["train_questions"] == 4
    with_captions = build_data(tmp_path, captions=True, **kwargs)
    rows = [json.loads(line) for line in (tmp_path / "train-prompted.jsonl").read_text().splitlines()]
    assert with_captions["train_questions"] == 5 and rows[-1] == caption  # asked as captioned, no suffix
    assert all(r["conversations"][0]["value"].endswith("\nOne word.") for r in rows[:-1])
    build_data(tmp_path, repeats=2, **kwargs)
    repeats = [json.loads(line) for line in (tmp_path / "train-prompted.jsonl").read_text().splitlines()][-2:]
    assert [r["conversations"] for r in repeats] == [[
        {"from": "human", "value": "What color is the shape?\nWhat did I say? Repeat it word for word."},
        {"from": "gpt", "value": "What color is the shape?"}]] * 2 and "image" not in repeats[0]


def test_budget_scales_training_steps():
    recipe, half = load_recipe(), load_recipe(budget_minutes=load_recipe()["budget_minutes"] / 2)
    assert half["train"]["optim"]["max_steps"] == round(recipe["train"]["optim"]["max_steps"] / 2)


def test_seed_replaces_only_the_training_seed():
    recipe, seeded = load_recipe(), load_recipe(seed=3)
    assert seeded["train"]["seed"] == 3 and recipe["train"]["seed"] == 0
    assert seeded["eval"] == recipe["eval"]


def test_a_run_at_chance_on_yes_no_says_how_to_train_again():
    def results(yesno):
        return {"typed": {"by_category": {"shape": {"vqa_accuracy": 1.0}, "yesno": {"vqa_accuracy": yesno}}}}

    assert results_warnings(results(0.92), seed=0) == []
    (warning,) = results_warnings(results(0.466), seed=0)
    assert "46.6%" in warning and "--seed 1" in warning
    assert results_warnings({"typed": {"by_category": {"shape": {"vqa_accuracy": 0.2}}}}, seed=0) == []


def test_quickstart_end_to_end_on_a_tiny_model_resumes(tmp_path, monkeypatch):
    pytest.importorskip("easy_vqa")
    speech = shutil.which("espeak-ng") is not None
    recipe = {
        "budget_minutes": 20, "answer_suffix": "\nAnswer with one word.", "train_limit": 30, "repeats": 4,
        "eval": {"limit": 3, "seed": 0, "batch_size": 2},
        "train": {"model": {"tiny": ["image", "audio"]}, "optim": {"batch_size": 2, "max_steps": 2},
                  "save_every": 1, "feature_cache": {"enabled": False}},
    }
    first = run_quickstart(tmp_path, recipe)
    assert set(first["results"]) == ({"typed", "spoken"} if speech else {"typed"})
    assert first["results"]["typed"]["num_items"] == 3
    assert len(first["examples"]) == (3 if speech else 1)
    assert (tmp_path / "model" / "omnilm.json").is_file() and (tmp_path / "train" / "loss.png").is_file()
    table = results_table(first["results"])
    assert table.splitlines()[2].startswith("| typed | 3 | ") and "colour" in table.splitlines()[0]
    assert "| total |" in timings_table(first["seconds"])
    assert first["warnings"] == results_warnings(first["results"], seed=0)

    def boom(*args, **kwargs):
        raise AssertionError("a finished step ran again")

    monkeypatch.setattr("omnilm.quickstart.train_model", boom)
    monkeypatch.setattr("omnilm.quickstart.build_data", boom)
    again = run_quickstart(tmp_path, recipe)  # everything done: nothing reruns, same answers
    assert again["results"] == first["results"] and again["examples"] == first["examples"]
    assert json.loads((tmp_path / "quickstart.json").read_text()).keys() == first["seconds"].keys()
