"""JSONL records: both accepted shapes, and errors that give the file and line."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from omnilm.data.records import RecordError, read_records


@pytest.fixture()
def root(tmp_path):
    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "b.png")
    return tmp_path


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_llava_and_openai_shapes(root):
    rows = [
        {"id": "l", "image": "a.png", "category": "color",
         "conversations": [{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "red"}]},
        {"id": "o", "images": ["a.png", "b.png"], "answers": ["two"],
         "messages": [{"role": "user", "content": "<image><image>How many?"}, {"role": "assistant", "content": "2"}]},
        {"id": "p", "messages": [{"role": "user", "content": [{"type": "image", "image": "b.png"},
                                                              {"type": "text", "text": "Colour?"}]},
                                 {"role": "assistant", "content": "blue"}]},
    ]
    records = read_records(write(root / "d.jsonl", rows))
    assert [r.id for r in records] == ["l", "o", "p"]
    first = records[0]
    assert first.prompt == [{"role": "user", "content": [{"type": "image", "image": str(root / "a.png")},
                                                         {"type": "text", "text": "\nWhat colour?"}]}]
    assert first.answer == "red" and first.category == "color"
    assert [p["image"] for p in records[1].prompt[0]["content"] if p["type"] == "image"] == [
        str(root / "a.png"), str(root / "b.png")]
    assert records[1].fields == {"answers": ["two"]}
    assert records[2].answer == "blue"


def test_media_root_and_limit(root, tmp_path_factory):
    other = tmp_path_factory.mktemp("elsewhere")
    row = {"image": "a.png", "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "x"}]}
    path = write(other / "d.jsonl", [row, {**row, "id": "second"}])
    with pytest.raises(RecordError, match="image file not found"):
        read_records(path)
    assert len(read_records(path, media_root=root, limit=1)) == 1


def test_every_bad_line_is_reported_with_its_line(root):
    good = {"id": "ok", "image": "a.png",
            "conversations": [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]}
    rows = [
        good,
        '{"id": "broken", ',  # line 2: malformed JSON
        {**good, "id": "m", "image": "missing.png"},  # line 3
        {**good, "id": "n", "conversations": [{"from": "human", "value": "<image>\nQ"}]},  # line 4: no answer
        {**good, "id": "p", "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]},  # 5
        {**good, "id": "r", "conversations": [{"from": "robot", "value": "<image>"}, {"from": "gpt", "value": "A"}]},
        good,  # line 7: duplicate id
        {"id": "x", "text": "no conversation"},  # line 8
    ]
    path = write(root / "bad.jsonl", rows)
    with pytest.raises(RecordError) as info:
        read_records(path)
    message = str(info.value)
    assert "7 invalid record(s)" in message
    for line, words in [(2, "malformed JSON"), (3, "image file not found"), (4, "no assistant turn"),
                        (5, "0 <image> placeholder(s) but 1 image file(s)"), (6, "unknown role 'robot'"),
                        (7, "duplicate id 'ok'"), (8, '"conversations"')]:
        assert f"{path}:{line}: " in message and words in message, (line, words, message)


def test_empty_and_missing_files(root):
    with pytest.raises(RecordError, match="not found"):
        read_records(root / "nope.jsonl")
    with pytest.raises(RecordError, match="no records"):
        read_records(write(root / "empty.jsonl", []))


def test_content_parts_are_read_by_the_one_parser_of_chat_and_the_server(root):
    import base64

    from omnilm.chat import normalize_conversation, parse_part
    from omnilm.errors import OmniError

    wav = base64.b64encode(b"RIFF....WAVE").decode()
    assert parse_part({"type": "image_url", "image_url": {"url": "a.png"}}, "here") == ("image", "a.png")
    assert parse_part({"type": "video_url", "video_url": "data:video/mp4;base64,AA=="}, "here")[0] == "video"
    assert parse_part({"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}}, "here") == (
        "audio", b"RIFF....WAVE")
    assert parse_part({"type": "text", "text": "hi"}, "here") == ("text", "hi")
    rows = [{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "b.png"}},
                                                       {"type": "input_audio", "input_audio": {"data": wav}}]},
                          {"role": "assistant", "content": "blue"}]}]
    content = read_records(write(root / "ok.jsonl", rows))[0].prompt[0]["content"]
    assert content == [{"type": "image", "image": str(root / "b.png")}, {"type": "audio", "audio": b"RIFF....WAVE"}]
    bad = {"type": "input_audio", "input_audio": {"data": "%%%", "format": "wav"}}
    with pytest.raises(OmniError, match="message 0: input_audio data is not valid base64"):
        normalize_conversation([{"role": "user", "content": [bad]}], {"audio": "<audio>"})
    rows = [{"messages": [{"role": "user", "content": [bad]}, {"role": "assistant", "content": "x"}]}]
    with pytest.raises(RecordError, match="turn 0: input_audio data is not valid base64"):
        read_records(write(root / "bad.jsonl", rows))
