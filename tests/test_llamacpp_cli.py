"""`omnilm export --to gguf` and `--engine llama.cpp` on the command line, with a tiny model."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")

from omnilm.cli.main import main


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_lm, tmp_path_factory):
    return tiny_lm.save(tmp_path_factory.mktemp("ckpt") / "tiny")


def test_export_then_generate_with_either_engine(tiny_checkpoint, tmp_path, capsys, red_image):
    image = tmp_path / "red.png"
    red_image.save(image)
    out = tmp_path / "tiny-f16"
    assert main(["export", str(tiny_checkpoint), str(out), "--to", "gguf", "--quant", "F16"]) == 0
    capsys.readouterr()
    ask = ["--prompt", "what color?", "--image", str(image), "--max-new-tokens", "8"]
    assert main(["generate", str(tiny_checkpoint), *ask]) == 0
    torch_answer = capsys.readouterr().out
    assert main(["generate", str(out), *ask]) == 0  # an export picks llama.cpp
    assert capsys.readouterr().out == torch_answer
    assert main(["generate", str(tiny_checkpoint), "--engine", "llama.cpp", "--quant", "F16", *ask]) == 0
    assert capsys.readouterr().out == torch_answer


def test_bad_quant_is_refused_before_loading(tiny_checkpoint, tmp_path, capsys):
    assert main(["export", str(tiny_checkpoint), str(tmp_path / "x"), "--to", "gguf", "--quant", "Q9"]) == 2
    assert "unknown quantization 'Q9'" in capsys.readouterr().err
