"""The native quickstart (`--recipe native`): spoken training questions, video clips, distillation, the cascade
beside native hearing, and the latency step, on a tiny model."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import omnilm
from omnilm.data.easy_vqa import TRAIN_VOICES
from omnilm.quickstart import Recipe, default_recipe, load_recipe, run_quickstart, video_table

TINY_NATIVE = {
    "budget_minutes": 20, "answer_suffix": "\nAnswer with one word.", "train_limit": 30,
    "spoken_train": {"share": 0.5, "augment": True},
    "video": {"train_clips": 3, "test_clips": 1},
    "audio_align": {"max_steps": 2, "check_items": 2},
    "transcript_tune": {"max_steps": 2},
    "eval": {"limit": 3, "seed": 0, "batch_size": 2, "cascade": True, "latency_items": 2},
    "train": {"model": {"tiny": ["image", "audio", "video"]}, "optim": {"batch_size": 2, "max_steps": 3},
              "stage": {"loss": {"type": "distill"}}, "save_every": 1, "feature_cache": {"enabled": False}},
}
TRANSCRIPT_FIRST_IN_STAGE_2 = {**TINY_NATIVE, "transcript_tune": None,
                               "spoken_train": {"share": 0.5, "transcript_first": True},
                               "train": {**TINY_NATIVE["train"], "stage": {"loss": {"type": "cross_entropy"}}}}


class FakeWhisper:
    """The tiny Whisper cannot transcribe: the cascade hears each clip as a fixed question."""

    def transcribe(self, clips):
        return ["What color is the shape?" for _ in clips]


def test_the_native_recipe_ships_and_hears_through_the_swiglu_connector_with_distillation():
    assert default_recipe("native").is_relative_to(Path(omnilm.__file__).parent)
    recipe = load_recipe("native")
    config = recipe.train.model.config
    assert config["audio"]["mode"] == "embed" and config["connectors"]["audio"]["type"] == "swiglu"
    assert recipe.train.stage.loss.type == "distill" and not recipe.spoken_train.transcript_first and recipe.video
    assert recipe.transcript_tune.max_steps > 0 and recipe.transcript_first  # stage 3 teaches the words
    assert recipe.eval.cascade and recipe.eval.latency_items > 0
    assert load_recipe().spoken_train is None and load_recipe().video is None  # `make demo` is unchanged


@pytest.mark.requires_tool("espeak-ng")
def test_native_quickstart_end_to_end_on_a_tiny_model_resumes(tmp_path, monkeypatch):
    pytest.importorskip("easy_vqa")
    monkeypatch.setattr("omnilm.quickstart.whisper_for", lambda lm: FakeWhisper())
    summary = run_quickstart(tmp_path, TINY_NATIVE)
    assert set(summary["results"]) == {"typed", "spoken", "spoken-cascade", "video"}
    assert summary["results"]["spoken-cascade"]["num_items"] == summary["results"]["spoken"]["num_items"] == 3
    assert summary["results"]["video"]["num_items"] == 6  # one test clip, six questions
    assert "| all | 6 |" in video_table(summary["results"]["video"])
    latency = summary["latency"]
    assert latency["items"] == 2 and latency["audio_mode"] == "embed"
    assert latency["spoken_ms"] > 0 and latency["cascade_ms"] > 0 and latency["spoken_answer_ms"] > 0
    heard = summary["results"]["spoken"]["heard"]  # the first line of each spoken reply against the words said
    assert heard["items"] == 3 and heard["wer"] >= 0 and len(heard["examples"]) == 3

    data = tmp_path / "data"
    train = [json.loads(line) for line in (data / "train-prompted.jsonl").read_text().splitlines()]
    spoken = [r for r in train if r["category"].startswith("spoken-")]
    video = [r for r in train if r["category"].startswith("video-")]
    assert spoken and len(video) == 18
    assert {r["voice"]["voice"] for r in spoken} <= set(TRAIN_VOICES)  # test voices are never trained on
    assert all("condition" in r["voice"] and len(r["spoken_text"]) == 1 for r in spoken)
    assert all(r["conversations"][0]["value"] == "<image>\n<audio>\nAnswer with one word." for r in spoken)
    typed = {r["id"]: r["conversations"] for r in train}
    for record in spoken:  # stage 2: the typed question's one-word answer
        question, answer = typed[record["id"].removeprefix("spoken-")]
        assert question["value"] == f"<image>\n{record['spoken_text'][0]}\nAnswer with one word."
        assert record["conversations"][1] == answer
    stage3 = [json.loads(line) for line in (data / "train-transcript.jsonl").read_text().splitlines()]
    heard3 = [r for r in stage3 if "audio" in r]
    assert [r["id"] for r in heard3] == [r["id"] for r in spoken]  # every spoken question, then as many typed
    assert len(stage3) == 2 * len(spoken) and all(r["category"] in ("shape", "color", "yesno")
                                                  for r in stage3 if "audio" not in r)
    for record in heard3:  # stage 3: the words spoken, then the answer
        answer = typed[record["id"].removeprefix("spoken-")][1]
        assert record["conversations"][1]["value"] == f"{record['spoken_text'][0]}\n{answer['value']}"
    for record in spoken[:2] + video[:2]:
        for key in ("image", "audio", "video"):
            for path in [record[key]] if isinstance(record.get(key), str) else record.get(key, []):
                assert (data / path).is_file(), path
    align = [json.loads(line) for line in (data / "train-align.jsonl").read_text().splitlines()]
    assert sorted(r["spoken_text"] for r in align) == sorted(r["spoken_text"] for r in spoken)  # each clip once
    assert all("image" not in r and r["conversations"][1]["value"] == r["spoken_text"][0] for r in align)
    assert summary["align"]["items"] == 2 and 0 <= summary["align"]["exact"] <= 1 and summary["align"]["wer"] >= 0
    stage1 = yaml.safe_load((tmp_path / "align" / "train_config.yaml").read_text())
    assert stage1["stage"]["llm"]["mode"] == "frozen" and stage1["stage"]["connectors"]["mode"] == "frozen"
    assert stage1["stage"]["per_connector"]["audio"]["mode"] == "full"
    stage2 = yaml.safe_load((tmp_path / "train" / "train_config.yaml").read_text())
    assert stage2["model"]["checkpoint"] == summary["align"]["model"]  # stage 2 starts from the aligned connector
    stage3_config = yaml.safe_load((tmp_path / "transcript-tune" / "train_config.yaml").read_text())
    assert stage3_config["model"]["checkpoint"] == str(tmp_path / "transcript-tune" / "start")
    assert stage3_config["stage"]["loss"] == {**stage3_config["stage"]["loss"], "type": "cross_entropy",
                                              "average": "record"}
    assert stage3_config["stage"]["llm"]["mode"] == "lora" and stage3_config["stage"]["connectors"]["mode"] == "frozen"
    start = load_file(str(tmp_path / "transcript-tune" / "start" / "model.safetensors"))
    aligned = load_file(str(Path(summary["align"]["model"]) / "model.safetensors"))
    trained = load_file(str(tmp_path / "train" / "final" / "model.safetensors"))
    for name, tensor in start.items():  # stage 1's audio connector, stage 2's everything else
        expected = aligned[name] if name.startswith("connectors.audio.") else trained[name]
        assert torch.equal(tensor, expected), name
    assert summary["transcript_tune"]["spoken"] == len(spoken) and summary["model"]
    cascade = [json.loads(line) for line in (tmp_path / "eval" / "cascade.jsonl").read_text().splitlines()]
    assert {r["heard"] for r in cascade} == {"What color is the shape?"}

    lm = omnilm.load(summary["model"])  # the saved model takes all four inputs
    assert set(lm.modalities) == {"image", "audio", "video"}

    def boom(*args, **kwargs):
        raise AssertionError("a finished step ran again")

    monkeypatch.setattr("omnilm.quickstart.train_model", boom)
    monkeypatch.setattr("omnilm.quickstart.build_data", boom)
    monkeypatch.setattr("omnilm.quickstart.whisper_for", boom)
    again = run_quickstart(tmp_path, TINY_NATIVE)
    assert again["results"] == summary["results"] and again["latency"] == summary["latency"]


def test_spoken_and_video_sections_are_checked():
    with pytest.raises(omnilm.errors.ConfigError, match=r"^spoken_train.share: must be in \(0, 1\]"):
        Recipe.from_dict({**TINY_NATIVE, "spoken_train": {"share": 0}})
    with pytest.raises(omnilm.errors.ConfigError, match=r"^video.test_clips: must be >= 1"):
        Recipe.from_dict({**TINY_NATIVE, "video": {"test_clips": 0}})
    with pytest.raises(omnilm.errors.ConfigError, match=r"^spoken_train.repeat_share: must be in \[0, 1\]"):
        Recipe.from_dict({**TINY_NATIVE, "spoken_train": {"repeat_share": 1.5}})
    with pytest.raises(omnilm.errors.ConfigError, match=r"^spoken_train.flite_share: must be in \[0, 1\]"):
        Recipe.from_dict({**TINY_NATIVE, "spoken_train": {"flite_share": -0.1}})
    with pytest.raises(omnilm.errors.ConfigError, match=r"^spoken_train.flite_share: .*set augment: true"):
        Recipe.from_dict({**TINY_NATIVE, "spoken_train": {"augment": False, "flite_share": 0.2}})
    with pytest.raises(omnilm.errors.ConfigError, match=r"^audio_align: trains on the spoken training clips"):
        Recipe.from_dict({**TINY_NATIVE, "spoken_train": None})
    with pytest.raises(omnilm.errors.ConfigError, match=r"^audio_align.max_steps: must be >= 1"):
        Recipe.from_dict({**TINY_NATIVE, "audio_align": {"max_steps": 0}})


def test_the_budget_scales_the_audio_alignment_steps_too():
    recipe, half = load_recipe("native"), load_recipe("native", budget_minutes=load_recipe("native").budget_minutes / 2)
    assert half.audio_align.max_steps == round(recipe.audio_align.max_steps / 2)
    assert half.train.optim.max_steps == round(recipe.train.optim.max_steps / 2)


def test_a_spoken_repeat_is_the_clip_alone_answered_by_its_words():
    from omnilm.quickstart import spoken_repeat
    from omnilm.training.distill import text_twin

    row = {"id": "spoken-train-7", "image": ["images/train/7.png"], "audio": ["audio/a.wav"], "category": "spoken-yesno",
           "spoken_text": ["Is there a red shape?"], "conversations": [
               {"from": "human", "value": "<image>\n<audio>\nAnswer with one word."}, {"from": "gpt", "value": "no"}]}
    repeat = spoken_repeat(row)
    assert "image" not in repeat and repeat["audio"] == ["audio/a.wav"] and repeat["id"] == "repeat-spoken-train-7"
    assert repeat["conversations"][1]["value"] == "Is there a red shape?"  # what the clip says
    messages = [{"role": "user", "content": [{"type": "audio", "audio": "a.wav"},
                                             {"type": "text", "text": "What did I say?"}]}]
    assert text_twin(messages, repeat["spoken_text"])[0]["content"][0] == {"type": "text",
                                                                          "text": "Is there a red shape?"}


def test_transcript_first_answers_say_the_words_then_the_answer_and_are_scored_on_the_last_line():
    from omnilm.evaluation.tasks import load_task
    from omnilm.quickstart import transcript_first_answer, transcript_first_task

    row = {"spoken_text": ["Is there a red shape?"], "conversations": [
        {"from": "human", "value": "<image>\n<audio>\nAnswer with one word."}, {"from": "gpt", "value": "no"}]}
    assert transcript_first_answer(row) == {"from": "gpt", "value": "Is there a red shape?\nno"}
    assert row["conversations"][1]["value"] == "no"  # the record is not changed in place
    plain = load_task("easy-vqa-spoken")
    task = transcript_first_task(plain)
    assert task.clean("is there a red shape?\nNo.") == "no" and task.clean("Yes") == "yes"
    assert plain.clean("is there a red shape?\nNo.") == "is there a red shape"  # a one-word task reads line one
    assert task.generation["max_new_tokens"] > plain.generation["max_new_tokens"]


def test_transcript_first_needs_cross_entropy_and_stage_3_needs_stage_1_and_one_word_answers():
    distill = {**TINY_NATIVE["train"], "stage": {"loss": {"type": "distill"}}}
    with pytest.raises(omnilm.errors.ConfigError, match=r"^spoken_train.transcript_first: true needs "
                                                        r"train.stage.loss.type: cross_entropy"):
        Recipe.from_dict({**TRANSCRIPT_FIRST_IN_STAGE_2, "train": distill})
    plain = Recipe.from_dict({**TINY_NATIVE, "transcript_tune": None})
    assert Recipe.from_dict(TRANSCRIPT_FIRST_IN_STAGE_2).transcript_first and not plain.transcript_first
    with pytest.raises(omnilm.errors.ConfigError, match=r"^transcript_tune: starts the audio connector from stage 1"):
        Recipe.from_dict({**TINY_NATIVE, "audio_align": None})
    with pytest.raises(omnilm.errors.ConfigError, match=r"^transcript_tune: teaches the words after stage 2"):
        Recipe.from_dict({**TRANSCRIPT_FIRST_IN_STAGE_2, "transcript_tune": {"max_steps": 2}})
    with pytest.raises(omnilm.errors.ConfigError, match=r"^transcript_tune.max_steps: must be >= 1"):
        Recipe.from_dict({**TINY_NATIVE, "transcript_tune": {"max_steps": 0}})


def test_spoken_training_answers_transcript_first_in_stage_2_when_asked(tmp_path, monkeypatch):
    from omnilm.data.records import write_jsonl
    from omnilm.quickstart import SpokenTrainSection, spoken_training

    asked = []

    def build_spoken(source, out_dir, **kwargs):  # each question "spoken": its words kept in spoken_text
        asked.append({k: kwargs[k] for k in ("augment", "flite_share", "fastest")})
        rows = [json.loads(line) for line in Path(source).read_text().splitlines()]
        write_jsonl(out_dir / "spoken.jsonl", [{**r, "audio": ["a.wav"], "spoken_text": [r["conversations"][0][
            "value"].removeprefix("<image>\n")], "conversations": [{"from": "human", "value": "<image>\n<audio>"},
                                                                    r["conversations"][1]]} for r in rows])
        return {"files": {Path(source).name: str(out_dir / "spoken.jsonl")}}

    monkeypatch.setattr("omnilm.data.spoken.build_spoken", build_spoken)
    typed = [{"id": f"t{i}", "category": "yesno", "conversations": [
        {"from": "human", "value": f"<image>\nIs there a red shape {i}?\nAnswer."}, {"from": "gpt", "value": "no"}]}
        for i in range(4)]
    rows = spoken_training(tmp_path, typed, SpokenTrainSection(share=0.5, transcript_first=True), "\nAnswer.", 0)
    assert len(rows) == 2 and all(r["conversations"][0]["value"] == "<image>\n<audio>\nAnswer." for r in rows)
    assert all(r["conversations"][1]["value"] == f"{r['spoken_text'][0]}\nno" for r in rows)
    one_word = spoken_training(tmp_path, typed, SpokenTrainSection(share=0.5), "\nAnswer.", 0)
    assert [r["conversations"][1]["value"] for r in one_word] == ["no", "no"]
    spoken_training(tmp_path, typed, SpokenTrainSection(share=0.5, flite_share=0.2, fastest=1.3), "\nAnswer.", 0)
    assert asked == [{"augment": True, "flite_share": 0.0, "fastest": 1.2}] * 2 + [
        {"augment": True, "flite_share": 0.2, "fastest": 1.3}]  # the augmentation the recipe asks for


def test_graft_weights_takes_the_donors_tensors_under_the_prefix_only(tmp_path):
    from safetensors.torch import save_file

    from omnilm.checkpoint import graft_weights
    from omnilm.errors import OmniError

    for name, value in (("base", 0.0), ("donor", 1.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "omnilm.json").write_text("{}")
        save_file({"connectors.audio.w": torch.full((2,), value), "connectors.image.w": torch.full((2,), value)},
                  str(tmp_path / name / "model.safetensors"))
    out = graft_weights(tmp_path / "base", tmp_path / "donor", "connectors.audio.", tmp_path / "out")
    state = load_file(str(out / "model.safetensors"))
    assert state["connectors.audio.w"].tolist() == [1.0, 1.0] and state["connectors.image.w"].tolist() == [0.0, 0.0]
    assert (out / "omnilm.json").is_file()
    with pytest.raises(OmniError, match="do not store the same connectors.video"):
        graft_weights(tmp_path / "base", tmp_path / "donor", "connectors.video.", tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_the_words_a_transcript_first_model_heard_are_scored_against_the_words_spoken(tmp_path):
    from omnilm.data.records import write_jsonl
    from omnilm.quickstart import transcripts_heard

    write_jsonl(tmp_path / "spoken.jsonl", [{"id": "a", "question": "Is there a red shape?"},
                                            {"id": "b", "question": "What color is the shape?"}])
    write_jsonl(tmp_path / "predictions.jsonl", [{"id": "b", "raw": "what color is the shape?\nred"},
                                                 {"id": "a", "raw": "Is there a blue shape?\nno"}])
    heard = transcripts_heard(tmp_path / "predictions.jsonl", tmp_path / "spoken.jsonl")
    assert heard["items"] == 2 and heard["exact"] == 0.5
    assert heard["wer"] == round(1 / 10, 4)  # one word of the ten spoken: "red" heard as "blue"
    assert heard["examples"][1] == {"said": "Is there a red shape?", "heard": "Is there a blue shape?"}


def test_every_ablation_of_the_native_benchmark_is_a_valid_recipe_that_changes_what_it_names(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_native", Path(__file__).parents[1] / "bench" / "bench_native.py")
    bench_native = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_native)
    base = yaml.safe_load(default_recipe("native").read_text())
    for name, overrides in bench_native.ABLATIONS.items():
        written = yaml.safe_load(bench_native._native_recipe_with(overrides, tmp_path / f"{name}.yaml").read_text())
        load_recipe(tmp_path / f"{name}.yaml")  # a wrong path or value fails here
        assert (written == base) == (not overrides), name
    frame_delta = load_recipe(tmp_path / "frame-delta.yaml").train.model.config["video"]
    assert frame_delta["frame_delta"] is True and not base["train"]["model"]["config"]["video"].get("frame_delta")
