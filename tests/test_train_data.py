"""Training inputs: bad data and bad configs are refused before training, the collator, stages, the
feature cache, streaming, and the espeak-ng spoken-dataset builder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from omnilm.cli.main import main
from omnilm.data.toy import build_shapes
from train_helpers import CONFIGS


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return Path(build_shapes(tmp_path_factory.mktemp("shapes"), train=24, test=8, seed=3)["dir"])


@pytest.fixture(scope="module")
def image_lm():
    from omnilm.testing import tiny_model

    return tiny_model(("image",))


def train_cli(shapes: Path, out: Path, *overrides: str, config: str = "tiny-image.yaml") -> int:
    args = ["train", str(CONFIGS / config)]
    for setting in (f"output_dir={out}", f"data.train={shapes / 'train.jsonl'}", "data.eval=null",
                    f"feature_cache.dir={out}-features", *overrides):
        args += ["--set", setting]
    return main(args)


# Bad data: reported with file and line before any model is loaded -------------------------------
GOOD = {"image": "images/train-0.png",
        "conversations": [{"from": "human", "value": "<image>\nwhat color?"}, {"from": "gpt", "value": "red"}]}
BAD_LINES = {
    "malformed": ('{"image": "images/train-0.png", "conversations": [', "malformed JSON"),
    "missing_media": (json.dumps({**GOOD, "image": "images/nowhere.png"}), "file not found"),
    "no_assistant": (json.dumps({**GOOD, "conversations": GOOD["conversations"][:1]}), "no assistant turn"),
    "placeholder_mismatch": (json.dumps({**GOOD, "conversations": [
        {"from": "human", "value": "<image><image>\nwhat color?"}, {"from": "gpt", "value": "red"}]}), "placeholder"),
    "wrong_modality": (json.dumps({"audio": "images/train-0.png", "conversations": [
        {"from": "human", "value": "<audio>\nwhat?"}, {"from": "gpt", "value": "red"}]}), "takes no audio"),
}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_bad_record_is_reported_with_file_and_line_before_training(kind, shapes, tmp_path, capsys):
    line, message = BAD_LINES[kind]
    records = [json.dumps({**GOOD, "id": f"r{i}"}) for i in range(4)]
    records.insert(2, line)  # line 3 of the file
    data = shapes / f"bad-{kind}.jsonl"
    data.write_text("\n".join(records) + "\n")
    code = main(["train", str(CONFIGS / "tiny-image.yaml"), "--set", f"output_dir={tmp_path / 'out'}",
                 "--set", f"data.train={data}", "--set", "data.eval=null"])
    error = capsys.readouterr().err
    assert code == 2
    assert f"{data}:3" in error and message in error, error
    assert not (tmp_path / "out").exists()  # nothing was trained or written


# Configs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("override", "names"), [
    ("optim.bogus=1", "bogus"),
    ("stage.llm.mode=quantum", "stage.llm.mode"),
    ("stage.vision.mode=lora", "stage.vision.mode"),
    ("optim.lr=fast", "optim.lr: expected a number"),
    ("optim.schedule=step", "optim.schedule"),
    ("model.checkpoint=somewhere", "exactly one of"),
    ("keep_last=0", "keep_last"),
    ("data.streaming=true", "optim.max_steps"),
])
def test_bad_config_names_the_field(override, names, tmp_path, capsys):
    assert main(["train", str(CONFIGS / "tiny-image.yaml"), "--set", override, "--dry-run"]) == 2
    assert names in capsys.readouterr().err


def test_yaml_and_set_overrides(tmp_path):
    from omnilm.training.config import TrainConfig

    overrides = ["optim.lr=1e-3", "stage.llm.lr=2e-4", "stage.per_connector.image.lr=5e-3", "eval_every=null"]
    config = TrainConfig.from_file(CONFIGS / "tiny-image.yaml", overrides)
    assert config.optim.lr == 1e-3 and config.stage.llm.lr == 2e-4 and config.eval_every is None
    assert config.stage.connector("image").lr == 5e-3 and config.stage.connector("audio").lr == 3e-3
    assert config.stage.connector("image").mode == "full"  # an override inherits what it does not name
    assert TrainConfig.from_dict(__import__("yaml").safe_load(config.to_yaml())) == config
    for recipe in ("stage1-align.yaml", "stage2-lora.yaml", "tiny-audio.yaml", "tiny-image-lora.yaml"):
        TrainConfig.from_file(CONFIGS / recipe)  # every shipped recipe is valid


@pytest.mark.skipif(torch.cuda.is_available(), reason="QLoRA runs where CUDA is available")
def test_qlora_is_refused_on_cpu_with_a_clear_message(shapes, tmp_path, capsys):
    assert train_cli(shapes, tmp_path / "q", "stage.llm.mode=qlora") == 2
    error = capsys.readouterr().err
    assert "qlora needs a CUDA GPU" in error and "mode: lora" in error


# Stages -------------------------------------------------------------------------------------------
def test_stages_train_exactly_the_parts_they_name():
    from omnilm.testing import tiny_model
    from omnilm.training.config import OptimSection, StageSection
    from omnilm.training.stages import apply_stage, param_groups

    model = tiny_model(("image", "audio")).model
    stage = StageSection(per_connector={"audio": {"mode": "full", "lr": 0.5}})  # stage 1, audio connector faster
    apply_stage(model, stage)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"connectors"}
    groups = {g["part"]: g["lr"] for g in param_groups(model, stage, OptimSection(lr=0.1))}
    assert groups == {"connectors.image": 0.1, "connectors.audio": 0.5}

    apply_stage(model, StageSection(llm={"mode": "lora"}, connectors={"mode": "frozen"}))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)


# Collator -----------------------------------------------------------------------------------------
def test_collator_pads_dynamically_and_labels_only_the_answer(shapes, image_lm):
    from omnilm.training.data import Collator, load_records

    rows = load_records([str(shapes / "train.jsonl")], None, ("image",))[:3]
    long = json.loads(rows[2]["messages"])
    long[0]["content"].append({"type": "text", "text": " please answer with one word, the colour of the shape"})
    rows[2] = {**rows[2], "messages": json.dumps(long)}
    batch = Collator(image_lm.processor)(rows)
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape[1] == int(lengths.max()) and int(lengths.min()) < int(lengths.max())
    tokenizer = image_lm.processor.tokenizer
    for row, ids, labels in zip(rows, batch["input_ids"], batch["labels"]):
        answer = json.loads(row["messages"])[-1]["content"][0]["text"]
        kept = labels[labels != -100]
        assert torch.equal(kept, ids[labels != -100])
        assert tokenizer.decode(kept).strip().startswith(answer)
    assert [Path(p).name for p in batch["media_items"]["image"]] == [f"train-{i}.png" for i in range(3)]


# Feature cache ------------------------------------------------------------------------------------
def test_feature_cache_encodes_each_item_once_and_changes_nothing(shapes, image_lm, tmp_path):
    from omnilm.data.feature_cache import FeatureCache
    from omnilm.training.data import Collator, load_records

    model, processor = image_lm.model.eval(), image_lm.processor
    rows = load_records([str(shapes / "train.jsonl")], None, ("image",))[:4]
    cache = FeatureCache(tmp_path / "features", model, processor)
    with torch.no_grad():
        plain = dict(Collator(processor)(rows))
        plain.pop("media_items")
        expected = model(**plain).logits
        for _ in range(2):
            batch = cache.apply(model, Collator(processor)(rows))
            assert "pixel_values" not in batch and batch["image_features"].shape[0] == 4
            torch.testing.assert_close(model(**batch).logits, expected)
    assert (cache.misses, cache.hits) == (4, 4)
    again = FeatureCache(tmp_path / "features", model, processor)  # a later run reuses the files
    again.apply(model, Collator(processor)(rows))
    assert (again.misses, again.hits) == (0, 4)
    mean = processor.layout.image_mean
    processor.layout.image_mean = (0.5, 0.5, 0.5)  # other preprocessing → another identity
    assert FeatureCache(tmp_path / "features", model, processor).identities != cache.identities
    processor.layout.image_mean = mean
    model.vision.requires_grad_(True)  # a trained encoder is never cached
    assert FeatureCache(tmp_path / "features", model, processor).identities == {}
    model.vision.requires_grad_(False)


def test_video_frames_from_cache_match_and_train_the_frame_embedding(tmp_path):
    from omnilm.testing import tiny_model

    lm = tiny_model(("video",))
    model = lm.model.eval()
    frames = torch.randn(2, 4, 3, 32, 32)  # (N_vid, F, 3, S, S)
    with torch.no_grad():
        per_frame = model.vision(frames.flatten(0, 1)).unflatten(0, (2, 4))  # (N_vid, F, T, C)
        direct = torch.cat(model.encode_media(video_pixel_values=frames)["video"])
        cached = torch.cat(model.encode_media(video_frame_features=per_frame)["video"])
    torch.testing.assert_close(cached, direct)
    torch.cat(model.encode_media(video_pixel_values=frames)["video"]).sum().backward()
    assert model.video.frame_position.grad is not None  # frozen vision must not stop the frame embedding's gradient


# Streaming + accumulation + gradient checkpointing + linear schedule ------------------------------
def test_streaming_run_with_accumulation_and_checkpointing(shapes, tmp_path):
    out = tmp_path / "stream"
    code = train_cli(shapes, out, "data.streaming=true", "optim.max_steps=4", "optim.batch_size=4",
                     "optim.grad_accum=2", "optim.gradient_checkpointing=true", "optim.schedule=linear", "save_every=2",
                     "stage.llm.mode=lora")
    assert code == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4] and metrics[-1]["samples"] == 32
    assert metrics[-1]["lr"] == 0.0  # linear decay to zero at the last step
    assert (out / "final" / "omnilm.json").is_file() and (out / "loss.png").is_file()


# Spoken datasets ----------------------------------------------------------------------------------
@pytest.mark.requires_tool("espeak-ng")
def test_spoken_builder_keeps_test_voices_apart(shapes, tmp_path):
    import soundfile

    from omnilm.data.records import read_records
    from omnilm.data.spoken import TEST_VOICES, TRAIN_VOICES

    assert not set(TEST_VOICES) & set(TRAIN_VOICES)
    (shapes / "small-train.jsonl").write_text("".join((shapes / "train.jsonl").read_text().splitlines(True)[:3]))
    (shapes / "small-test.jsonl").write_text("".join((shapes / "test.jsonl").read_text().splitlines(True)[:2]))
    out = tmp_path / "spoken"
    assert main(["data", "spoken", str(shapes / "small-train.jsonl"), str(out), "--copies", "2"]) == 0
    assert main(["data", "spoken", str(shapes / "small-test.jsonl"), str(out)]) == 0
    train = [json.loads(line) for line in (out / "small-train.jsonl").read_text().splitlines()]
    test = [json.loads(line) for line in (out / "small-test.jsonl").read_text().splitlines()]
    assert len(train) == 6 and len(test) == 2
    assert {r["voice"]["voice"] for r in train} <= set(TRAIN_VOICES)
    assert {r["voice"]["voice"] for r in test} <= set(TEST_VOICES)
    assert train[0]["spoken_text"] == ["what color is the shape?"]
    records = read_records(out / "small-train.jsonl")  # valid training data: image + spoken question
    kinds = [part["type"] for part in records[0].messages[0]["content"] if part["type"] != "text"]
    assert kinds == ["image", "audio"]
    samples, rate = soundfile.read(out / train[0]["audio"][0])
    assert rate == 16_000 and 0.3 < len(samples) / rate < 5


def test_spoken_builder_without_espeak_says_how_to_install(shapes, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert main(["data", "spoken", str(shapes / "test.jsonl"), str(tmp_path / "out")]) == 2
    assert "apt-get install -y espeak-ng" in capsys.readouterr().err
