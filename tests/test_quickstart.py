"""The quickstart's orchestration on a tiny model: steps run once, resume, and the table (seconds)."""

import json
import shutil

import pytest

from omnilm.quickstart import Steps, balance, load_recipe, results_table, run_quickstart, single_turn, timings_table


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


def test_balance_keeps_every_open_question_and_a_seeded_share_of_yes_no():
    records = [{"id": i, "category": "yesno" if i % 4 else ("shape", "color")[i % 8 // 4]} for i in range(4000)]
    kept = balance(records, 0.25, seed=0)
    assert [r for r in kept if r["category"] != "yesno"] == [r for r in records if r["category"] != "yesno"]
    share = sum(r["category"] == "yesno" for r in kept) / 3000
    assert 0.22 < share < 0.28 and kept == balance(records, 0.25, seed=0) != balance(records, 0.25, seed=1)
    assert balance(records, 1.0, seed=0) == records


def test_budget_scales_training_steps():
    recipe, half = load_recipe(), load_recipe(budget_minutes=load_recipe()["budget_minutes"] / 2)
    assert half["train"]["optim"]["max_steps"] == round(recipe["train"]["optim"]["max_steps"] / 2)


def test_quickstart_end_to_end_on_a_tiny_model_resumes(tmp_path, monkeypatch):
    pytest.importorskip("easy_vqa")
    speech = shutil.which("espeak-ng") is not None
    recipe = {
        "budget_minutes": 20, "answer_suffix": "\nAnswer with one word.", "train_limit": 30,
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

    def boom(*args, **kwargs):
        raise AssertionError("a finished step ran again")

    monkeypatch.setattr("omnilm.quickstart.train_model", boom)
    monkeypatch.setattr("omnilm.quickstart.build_data", boom)
    again = run_quickstart(tmp_path, recipe)  # everything done: nothing reruns, same answers
    assert again["results"] == first["results"] and again["examples"] == first["examples"]
    assert json.loads((tmp_path / "quickstart.json").read_text()).keys() == first["seconds"].keys()
