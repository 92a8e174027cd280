"""The quickstart's orchestration on a tiny model: steps run once, resume, and the table (seconds)."""

import fnmatch
import json
import shutil
import tomllib
from pathlib import Path

import pytest
import yaml

import omnilm
from omnilm.cli.main import main
from omnilm.errors import ConfigError, OmniError
from omnilm.quickstart import (
    Recipe,
    Steps,
    build_data,
    default_recipe,
    load_recipe,
    results_table,
    results_warnings,
    run_quickstart,
    timings_table,
)

TINY = {  # the quickstart on a tiny random model: seconds
    "budget_minutes": 20, "answer_suffix": "\nAnswer with one word.", "train_limit": 30, "repeats": 4,
    "eval": {"limit": 3, "seed": 0, "batch_size": 2},
    "train": {"model": {"tiny": ["image", "audio"]}, "optim": {"batch_size": 2, "max_steps": 2},
              "save_every": 1, "feature_cache": {"enabled": False}},
}


@pytest.fixture
def no_espeak(monkeypatch):
    """A machine without espeak-ng, whether or not this one has it."""
    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None if name == "espeak-ng"
                        else which(name, *args, **kwargs))


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


def test_paired_recipe_needs_the_file_order_and_even_batches(tmp_path):
    assert load_recipe().paired  # the committed recipe keeps its pairs together (checked on load)
    raw = yaml.safe_load(default_recipe().read_text())
    for key, value in (("data", {"shuffle": True}), ("optim", {"batch_size": 7})):
        with pytest.raises(OmniError, match="paired: true needs"):
            run_quickstart(tmp_path, {**raw, "train": {**raw["train"], key: value}})


@pytest.mark.parametrize("edit, message", [
    ({"open_fraction": 1.5}, r"^open_fraction: must be in \[0, 1\]"),
    ({"negated_fraction": -0.1}, r"^negated_fraction: must be in \[0, 1\]"),
    ({"repeats": -1}, r"^repeats: must be >= 0"),
    ({"eval": {"limit": 0}}, r"^eval.limit: must be >= 1"),
    ({"eval": {"limit": 3, "batch": 2}}, r"^eval: unknown field\(s\) \['batch'\]"),
    ({"train": {**TINY["train"], "optim": {"batch_size": 0}}}, r"^train.optim.batch_size: must be >= 1"),
    ({"train": {**TINY["train"], "model": {}}}, r"^train.model: set exactly one of"),
    ({"captionz": True}, r"^recipe: unknown field\(s\) \['captionz'\]"),
])
def test_a_bad_recipe_is_refused_naming_the_field(edit, message):
    with pytest.raises(ConfigError, match=message):
        Recipe.from_dict({**TINY, **edit})


def test_the_default_recipe_ships_inside_the_package():
    package = Path(omnilm.__file__).parent
    path = default_recipe()
    assert path.is_file() and path.is_relative_to(package)
    globs = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert any(fnmatch.fnmatch(str(path.relative_to(package)), pattern)  # a wheel carries it
               for pattern in globs["package-data"]["omnilm"])
    assert load_recipe().train.model.config["llm"]["source"] == "pkg:qwen2.5-0.5b-instruct"


def test_build_data_adds_captions_and_repeat_samples_when_asked(tmp_path):
    def record(i, prompt, answer, category):
        return {"id": f"r{i}", "image": f"images/train/{i}.png", "category": category,
                "conversations": [{"from": "human", "value": f"<image>\n{prompt}"}, {"from": "gpt", "value": answer}]}

    def recipe(**fields):
        return Recipe.from_dict({"answer_suffix": "\nOne word.", "eval": {"limit": 2, "seed": 0},
                                 "train": {"model": {"tiny": ["image"]}}, **fields})

    questions = [record(i, "what color is the shape?", "red", "color") for i in range(4)]
    caption = record(9, "Describe the image.", "a red circle", "circle")
    for name, rows in (("train", questions), ("test", questions), ("shapes-caption-train", [caption])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plain = build_data(tmp_path, recipe(), speech=False)
    assert plain["train_questions"] == 4
    with_captions = build_data(tmp_path, recipe(captions=True), speech=False)
    rows = [json.loads(line) for line in (tmp_path / "train-prompted.jsonl").read_text().splitlines()]
    assert with_captions["train_questions"] == 5 and rows[-1] == caption  # asked as captioned, no suffix
    assert all(r["conversations"][0]["value"].endswith("\nOne word.") for r in rows[:-1])
    build_data(tmp_path, recipe(repeats=2), speech=False)
    repeats = [json.loads(line) for line in (tmp_path / "train-prompted.jsonl").read_text().splitlines()][-2:]
    assert [r["conversations"] for r in repeats] == [[
        {"from": "human", "value": "What color is the shape?\nWhat did I say? Repeat it word for word."},
        {"from": "gpt", "value": "What color is the shape?"}]] * 2 and "image" not in repeats[0]


def test_budget_scales_training_steps():
    recipe, half = load_recipe(), load_recipe(budget_minutes=load_recipe().budget_minutes / 2)
    assert half.train.optim.max_steps == round(recipe.train.optim.max_steps / 2)


def test_seed_replaces_only_the_training_seed():
    recipe, seeded = load_recipe(), load_recipe(seed=3)
    assert seeded.train.seed == 3 and recipe.train.seed == 0
    assert seeded.eval == recipe.eval


def test_a_run_at_chance_on_yes_no_says_how_to_train_again():
    def results(yesno):
        return {"typed": {"by_category": {"shape": {"vqa_accuracy": 1.0}, "yesno": {"vqa_accuracy": yesno}}}}

    assert results_warnings(results(0.92), seed=0) == []
    (warning,) = results_warnings(results(0.466), seed=0)
    assert "46.6%" in warning and "--seed 1" in warning
    assert results_warnings({"typed": {"by_category": {"shape": {"vqa_accuracy": 0.2}}}}, seed=0) == []


def test_quickstart_end_to_end_on_a_tiny_model_resumes(tmp_path, monkeypatch, capsys, no_espeak):
    """A fresh machine (no espeak-ng): typed questions only, a warning, a quiet console, a resumable run."""
    pytest.importorskip("easy_vqa")
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(TINY))
    out = tmp_path / "out"
    assert main(["quickstart", "--out", str(out), "--recipe", str(tmp_path / "recipe.yaml")]) == 0
    console = capsys.readouterr()
    first = json.loads((out / "summary.json").read_text())
    assert set(first["results"]) == {"typed"} and not first["speech"]
    assert first["results"]["typed"]["num_items"] == 3
    assert len(first["examples"]) == 1
    assert "espeak-ng is not installed" in console.err and "make system-deps" in console.err
    assert "spoken questions skipped" in console.out
    # the console keeps the bars, results and warnings; accelerate's checkpoint lines and the steps' details
    # go to the log file it names
    log = (out / "quickstart.log").read_text()
    assert "INFO accelerate.checkpointing: " in log and "Model weights saved in" in log
    assert "INFO omnilm.quickstart: step train" in log
    assert "accelerate" not in console.err and "INFO" not in console.err
    assert f"details are logged to {out / 'quickstart.log'}" in console.err
    assert f"details: {out / 'quickstart.log'}" in console.out
    assert (out / "model" / "omnilm.json").is_file() and (out / "train" / "loss.png").is_file()
    table = results_table(first["results"])
    assert table.splitlines()[2].startswith("| typed | 3 | ") and "colour" in table.splitlines()[0]
    assert "| total |" in timings_table(first["seconds"])
    assert first["warnings"] == results_warnings(first["results"], seed=0)

    def boom(*args, **kwargs):
        raise AssertionError("a finished step ran again")

    monkeypatch.setattr("omnilm.quickstart.train_model", boom)
    monkeypatch.setattr("omnilm.quickstart.build_data", boom)
    again = run_quickstart(out, TINY)  # everything done: nothing reruns, same answers
    assert again["results"] == first["results"] and again["examples"] == first["examples"]
    assert json.loads((out / "quickstart.json").read_text()).keys() == first["seconds"].keys()


@pytest.mark.requires_tool("espeak-ng")
def test_quickstart_spoken_path_on_a_tiny_model(tmp_path):
    pytest.importorskip("easy_vqa")
    summary = run_quickstart(tmp_path, TINY)
    assert summary["speech"] and set(summary["results"]) == {"typed", "spoken"}
    assert summary["results"]["spoken"]["num_items"] == 3 and len(summary["examples"]) == 3
    spoken = [json.loads(line) for line in (tmp_path / "data" / "eval-spoken.jsonl").read_text().splitlines()]
    assert all((tmp_path / "data" / r["audio"]).is_file() for r in spoken)
