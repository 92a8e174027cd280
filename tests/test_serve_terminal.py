"""`omnilm chat` and `omnilm generate`: the terminal side of serving."""

from __future__ import annotations

import argparse
import io

import pytest

from omnilm.chat import normalize_conversation
from omnilm.cli import chat
from omnilm.cli.main import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from omnilm.testing import tiny_model

    return str(tiny_model(("image",)).save(tmp_path_factory.mktemp("ckpt") / "model"))


def chat_args(model: str, **extra) -> argparse.Namespace:
    values = dict(model=model, system=None, stop=None, max_new_tokens=6, temperature=0.0, top_p=1.0, seed=None,
                  device=None)
    return argparse.Namespace(**{**values, **extra})


def test_chat_help_prompt_and_dropped_attachments(checkpoint, tmp_path, png_bytes):
    good, bad = tmp_path / "red image.png", tmp_path / "bad.png"
    good.write_bytes(png_bytes)
    bad.write_bytes(b"not an image")
    script = f"/help\n/image '{good}'\n/image {bad}\nwhat?\nwhat now?\n/quit\n"
    out = io.StringIO()
    assert chat.run(chat_args(checkpoint), stdin=io.StringIO(script), stdout=out) == 0
    text = out.getvalue()
    assert "commands: /image PATH" in text.split("\n", 2)[2]  # /help, after the banner
    assert "attached image red image.png" in text  # quotes around a dropped file are removed
    assert "\n[image] > " in text and "\n[image, image] > " in text  # the prompt shows what waits
    assert "not a readable image" in text and "dropped 2 attachment(s)" in text
    assert text.rstrip().endswith(">")  # the next question was answered without the bad file


def test_chat_streams_the_same_answer_as_the_library(checkpoint):
    from omnilm import load

    out = io.StringIO()
    assert chat.run(chat_args(checkpoint, system="Be brief."), stdin=io.StringIO("hello\n"), stdout=out) == 0
    expected = load(checkpoint).chat([{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": [{"type": "text", "text": "hello"}]}],
                                     max_new_tokens=6)
    assert f"> {expected}\n" in out.getvalue()


def test_generate_checks_files_before_loading_the_model(capsys):
    assert main(["generate", "/no/such/model", "--prompt", "x", "--image", "/no/such.png"]) == 2
    assert "--image /no/such.png: no such file" in capsys.readouterr().err


def test_generation_flags_are_validated_before_loading_the_model(capsys):
    assert main(["generate", "/no/such/model", "--prompt", "x", "--top-p", "0"]) == 2
    assert "generation.top_p: must be in (0, 1]" in capsys.readouterr().err


def test_generate_takes_transformers_flags_and_refuses_streaming_beams(checkpoint, capsys):
    from omnilm import load

    expected = load(checkpoint).chat("hi", max_new_tokens=6, num_beams=2, repetition_penalty=1.5)
    args = ["generate", checkpoint, "--prompt", "hi", "--max-new-tokens", "6", "--num-beams", "2"]
    assert main([*args, "--repetition-penalty", "1.5"]) == 0
    assert capsys.readouterr().out == expected + "\n"
    assert main([*args, "--stream"]) == 2
    assert "cannot stream" in capsys.readouterr().err


def test_generate_system_stop_and_stream_with_placeholders(checkpoint, tmp_path, png_bytes, capsys):
    from omnilm import load

    image = tmp_path / "red.png"
    image.write_bytes(png_bytes)
    lm = load(checkpoint)
    messages = [{"role": "system", "content": "Answer."}, {"role": "user", "content": "<image> colour?"}]
    conversation = normalize_conversation(messages, lm.processor.layout.placeholders, images=[str(image)])
    full = lm.chat(conversation, max_new_tokens=12)
    args = ["generate", checkpoint, "--prompt", "<image> colour?", "--image", str(image), "--system", "Answer.",
            "--max-new-tokens", "12"]
    assert main([*args, "--stream"]) == 0
    assert capsys.readouterr().out == full + "\n"
    assert len(full) >= 3, f"the tiny model's answer {full!r} is too short to test --stop"
    stop = full[1:3]
    assert main([*args, f"--stop={stop}"]) == 0
    cut = full[: full.find(stop)]
    assert capsys.readouterr().out == cut + "\n" and len(cut) <= 1
