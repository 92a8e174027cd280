"""Data sources in the real schemas: LLaVA JSON arrays, hub parquet with {bytes, path} images, the-Cauldron,
LibriSpeech-style Audio columns, WebDataset tars; mixtures; bad input named by source and row; training on them."""

from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from omnilm.cli.main import main
from omnilm.data.index import record_offsets
from omnilm.data.mixture import Mixture, validate
from omnilm.data.records import RecordError
from omnilm.data.sources import SourceSpec, open_source
from omnilm.errors import OmniError
from train_helpers import CONFIGS


def png(color: str = "red", size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def wav(seconds: float = 0.2) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(int(16000 * seconds), np.float32), 16000, format="WAV")
    return buffer.getvalue()


def llava(i: int, images: int = 1) -> dict:
    """A record as in llava_v1_5_mix665k.json (image paths relative to the image folder)."""
    marks = "<image>\n" * images
    record = {"id": f"{i:09d}", "conversations": [
        {"from": "human", "value": f"{marks}What \"colour\" is shape {i}?\\"},
        {"from": "gpt", "value": "red"}, {"from": "human", "value": "And the shape?"}, {"from": "gpt", "value": "a"}]}
    record["image"] = "images/red.png" if images == 1 else ["images/red.png"] * images
    return record


@pytest.fixture()
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("OMNILM_CACHE", str(tmp_path / "cache"))
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "red.png").write_bytes(png())
    return tmp_path


def hub_parquet(path: Path, rows: dict, casts: dict) -> Path:
    """A parquet file as the hub stores one (features in its metadata: Image/Audio hold {bytes, path})."""
    import datasets

    dataset = datasets.Dataset.from_dict(rows)
    for column, feature in casts.items():
        dataset = dataset.cast_column(column, feature)
    dataset.to_parquet(str(path))
    return path


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


# LLaVA JSON arrays --------------------------------------------------------------------------------
@pytest.mark.parametrize("indent", [None, 2])
def test_llava_json_array_is_indexed_not_loaded_and_reads_each_record(folder, indent):
    rows = [llava(i, images=1 + i % 2) for i in range(50)]
    path = folder / "llava_mix.json"
    path.write_text(json.dumps(rows, indent=indent))
    source = open_source(str(path))
    assert len(source) == 50
    for i in (0, 17, 49):
        assert source.raw(i) == rows[i]
        record = source.record(i)
        kinds = [p["type"] for p in record.messages[0]["content"]]
        assert kinds.count("image") == 1 + i % 2  # interleaved multi-image records keep their images in place
        assert record.messages[0]["content"][-1]["text"].endswith('"colour" is shape %d?\\' % i)
    lines = path.read_text().splitlines()
    line = 1 + max(n for n, text in enumerate(lines) if n < [k for k, t in enumerate(lines) if "000000017" in t][0]
                   and text.strip() == "{") if indent else 1
    assert source.where(17) == f"{path}:{line} (record 17)"
    cached = list((folder / "cache" / "data-index").glob("*.npy"))
    assert len(cached) == 1
    again = record_offsets(path, kind="json")
    assert isinstance(again, np.memmap)  # read back memory-mapped: no per-record Python objects


def test_truncated_or_empty_json_array_is_a_clear_error(folder):
    path = folder / "cut.json"
    path.write_text(json.dumps([llava(0), llava(1)])[:-30])
    with pytest.raises(OmniError, match="truncated"):
        open_source(str(path))
    path.write_text("[]")
    with pytest.raises(RecordError, match="cut.json holds no records"):
        Mixture([open_source(str(path))])


# Hub parquet, the-Cauldron, LibriSpeech-style audio ------------------------------------------------
def test_hub_parquet_with_image_bytes_struct(folder):
    import datasets

    convs = [[{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": c}] for c in ("red", "blue")]
    path = hub_parquet(folder / "train-00000-of-00001.parquet",
                       {"id": ["a", "b"], "image": [{"bytes": png(c), "path": f"{c}.png"} for c in ("red", "blue")],
                        "conversations": convs}, {"image": datasets.Image()})
    spec = SourceSpec(path=str(path), columns={"images": "image", "conversations": "conversations", "id": "id"})
    source = open_source(spec)
    record = source.record(1)
    assert record.id == "b" and record.answer == "blue"
    image = record.messages[0]["content"][0]["image"]
    assert isinstance(image, bytes) and Image.open(io.BytesIO(image)).getpixel((0, 0)) == (0, 0, 255)
    assert source.where(1) == f"{path} row 1"


def test_cauldron_images_list_and_texts_turns(folder):
    import datasets

    rows = {"images": [[{"bytes": png("red"), "path": None}, {"bytes": png("blue"), "path": None}]],
            "texts": [[{"user": "Which is red?", "assistant": "The first.", "source": "ai2d"},
                       {"user": "And blue?", "assistant": "The second.", "source": "ai2d"}]]}
    dataset = datasets.Dataset.from_dict(rows).cast_column("images", datasets.List(datasets.Image()))
    dataset.save_to_disk(str(folder / "cauldron-ai2d"))
    source = open_source(SourceSpec(path=str(folder / "cauldron-ai2d"), columns={"images": "images", "texts": "texts"}))
    messages = source.record(0).messages
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert [p["type"] for p in messages[0]["content"]] == ["image", "image", "text"]
    assert messages[3]["content"][0]["text"] == "The second."


def test_librispeech_style_audio_feature(folder):
    import datasets

    from omnilm.media import load_audio

    path = hub_parquet(folder / "test.parquet", {"audio": [{"bytes": wav(), "path": "1089-134686-0000.flac"}],
                                                  "text": ["HE HOPED THERE WOULD BE STEW"], "id": ["1089-134686-0000"]},
                       {"audio": datasets.Audio(sampling_rate=16000)})
    source = open_source(SourceSpec(path=str(path), prompt="Transcribe the audio.",
                                    columns={"audios": "audio", "answer": "text", "id": "id"}))
    record = source.record(0)
    assert record.answer == "HE HOPED THERE WOULD BE STEW" and record.id == "1089-134686-0000"
    audio = record.messages[0]["content"][0]["audio"]
    assert len(load_audio(audio)) == 3200
    assert record.messages[0]["content"][-1]["text"].endswith("Transcribe the audio.")


# WebDataset tars -----------------------------------------------------------------------------------
def test_webdataset_captions_and_json_conversations(folder):
    shard = write_tar(folder / "00000.tar", {
        "000000000.jpg": png("red"), "000000000.txt": b"a red square",
        "000000001.jpg": png("blue"), "000000001.json": json.dumps({"caption": "a blue square", "url": "x"}).encode(),
        "000000002.png": png("green"), "000000002.json": json.dumps({"conversations": [
            {"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "green"}]}).encode(),
    })
    source = open_source(SourceSpec(path=str(folder / "{00000..00000}.tar"), prompt="Describe the image briefly."))
    assert len(source) == 3
    assert [source.record(i).answer for i in range(3)] == ["a red square", "a blue square", "green"]
    assert source.where(1) == f"{shard}:000000001"
    assert source.record(0).messages[0]["content"][-1]["text"].endswith("Describe the image briefly.")


def test_corrupt_shard_stops_or_is_skipped_and_reported(folder, caplog):
    write_tar(folder / "00000.tar", {"a.jpg": png(), "a.txt": b"red"})
    (folder / "00001.tar").write_bytes(b"this is not a tar archive" * 40)
    with pytest.raises(OmniError, match=r"00001.tar: not a readable tar shard.*on_error: skip"):
        open_source(str(folder / "*.tar"))
    with caplog.at_level(logging.WARNING):
        source = open_source(str(folder / "*.tar"), on_error="skip")
    assert len(source) == 1 and "00001.tar" in source.skipped[0] and "skipping shard" in caplog.text


# Bad input: named by source and row ----------------------------------------------------------------
def test_missing_column_names_it_and_the_columns_there_are(folder):
    import datasets

    path = hub_parquet(folder / "p.parquet", {"img": [{"bytes": png(), "path": None}], "caption": ["red"]},
                       {"img": datasets.Image()})
    with pytest.raises(OmniError, match=r"columns.images names column 'image'.*its columns are img, caption"):
        open_source(SourceSpec(path=str(path), columns={"images": "image", "answer": "caption"}))


def test_undecodable_image_and_placeholder_mismatch_name_the_row(folder):
    import datasets

    convs = [[{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "red"}],
             [{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "red"}],
             [{"from": "human", "value": "<image><image>\nColour?"}, {"from": "gpt", "value": "red"}]]
    images = [{"bytes": png(), "path": None}, {"bytes": b"\x89PNG not really", "path": None},
              {"bytes": png(), "path": None}]
    path = hub_parquet(folder / "bad.parquet", {"image": images, "conversations": convs}, {"image": datasets.Image()})
    source = open_source(SourceSpec(path=str(path), columns={"images": "image", "conversations": "conversations"}))
    with pytest.raises(RecordError) as error:
        validate(Mixture([source]), ("image",))
    message = str(error.value)
    assert f"{path} row 1: " in message and "image" in message
    assert f"{path} row 2: 2 <image> placeholder(s) but 1 image file(s)" in message
    assert f"{path} row 0" not in message


# Mixtures ------------------------------------------------------------------------------------------
def test_mixture_weights_and_a_fixed_seeded_subsample(folder):
    for name, count in (("a", 10), ("b", 7)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(llava(i)) + "\n" for i in range(count)))
    sources = [open_source(SourceSpec(path=str(folder / "a.jsonl"), weight=2)),
               open_source(SourceSpec(path=str(folder / "b.jsonl"), weight=0.5))]
    mixture = Mixture(sources, seed=3)
    assert len(mixture) == 20 + 4
    rows = [mixture.locate(i)[1] for i in range(24)]
    assert rows[:20] == list(range(10)) * 2
    assert len(set(rows[20:])) == 4 and rows[20:] == [Mixture(sources, seed=3).locate(i)[1] for i in range(20, 24)]
    assert mixture.where(21).startswith(str(folder / "b.jsonl") + ":")


def test_mixture_config_is_checked_through_configkit(folder, capsys):
    code = main(["train", str(CONFIGS / "tiny-image.yaml"), "--dry-run", "--set",
                 "data.train=[a.json, {hub: HuggingFaceM4/the_cauldron, name: ai2d, weight: 0}]"])
    assert code == 2 and "data.train[1].weight: must be > 0" in capsys.readouterr().err


# Training on them; resume position; bad records while training --------------------------------------
def train(folder: Path, train: str, *overrides: str) -> int:
    args = ["train", str(CONFIGS / "tiny-image.yaml")]
    for setting in (f"output_dir={folder / 'out'}", f"data.train={train}", "data.eval=null", "optim.max_steps=2",
                    "optim.batch_size=2", f"feature_cache.dir={folder / 'features'}", *overrides):
        args += ["--set", setting]
    return main(args)


def test_trains_on_a_mixture_of_a_json_array_a_parquet_and_a_tar(folder):
    import datasets

    (folder / "llava.json").write_text(json.dumps([llava(i) for i in range(4)]))
    convs = [[{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "red"}]] * 4
    hub_parquet(folder / "p.parquet", {"image": [{"bytes": png(), "path": None}] * 4, "conversations": convs},
                {"image": datasets.Image()})
    write_tar(folder / "00000.tar", {f"{i}.jpg": png() for i in range(4)} | {f"{i}.txt": b"red" for i in range(4)})
    mix = (f"[{folder / 'llava.json'}, {{path: {folder / 'p.parquet'}, columns: {{images: image, conversations: "
           f"conversations}}}}, {{path: {folder / '00000.tar'}, weight: 0.5}}]")
    assert train(folder, mix, "data.num_workers=1") == 0  # a worker process reads the sources (own file handles)
    assert (folder / "out" / "final" / "omnilm.json").is_file()


def test_resume_reads_the_exact_records_of_an_uninterrupted_run(folder):
    from omnilm.training.config import DataSection
    from omnilm.training.data import TrainData, record_dataset

    (folder / "llava.json").write_text(json.dumps([llava(i) for i in range(40)]))
    section = DataSection(train=str(folder / "llava.json"))
    data = TrainData(record_dataset(section, ("image",), seed=1), section, micro_batch=2, grad_accum=2, world=1,
                     rank=0, seed=1)
    data.attach(lambda rows: [row["where"] for row in rows])
    whole = list(data.steps(epoch=1))
    assert list(data.steps(epoch=1, start_step=3)) == whole[3:] and len(whole) == 10
    assert len({w for step in whole for micro in step for w in micro}) == 40  # every record once an epoch


def test_bad_image_found_while_training_stops_or_is_skipped(folder, capsys, caplog):
    members = {f"{i}.jpg": png() for i in range(6)} | {f"{i}.txt": b"red" for i in range(6)}
    members["3.jpg"] = b"\xff\xd8 broken jpeg"
    write_tar(folder / "00000.tar", members)
    sampled = ("data.check=sample", "data.check_sample=1", "data.shuffle=false", "optim.batch_size=3",
               "optim.max_steps=2")
    assert train(folder, str(folder / "00000.tar"), *sampled) == 2
    error = capsys.readouterr().err
    assert f"{folder / '00000.tar'}:3" in error and "data.on_error: skip" in error
    with caplog.at_level(logging.WARNING):
        assert train(folder, str(folder / "00000.tar"), *sampled, "data.on_error=skip",
                     f"output_dir={folder / 'skip'}") == 0
    assert f"skipped a bad record: {folder / '00000.tar'}:3" in caplog.text


def test_read_records_takes_a_llava_json_array_and_names_bad_records(folder):
    from omnilm.data.records import read_records

    rows = [llava(0), {**llava(1), "image": "images/nowhere.png"}, llava(2)]
    path = folder / "eval.json"
    path.write_text(json.dumps(rows, indent=1))
    with pytest.raises(RecordError, match=r"eval.json:\d+ \(record 1\): image file not found"):
        read_records(path)
    path.write_text(json.dumps([rows[0], rows[2]], indent=1))
    assert [r.answer for r in read_records(path)] == ["a", "a"]
