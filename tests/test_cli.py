import io
import subprocess
import sys
from pathlib import Path

import pytest

from omnilm.cli.main import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "omnilm.cli.main", *args], capture_output=True, text=True, timeout=300, check=False)


def test_help_lists_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("quickstart", "new", "generate", "chat"):
        assert command in result.stdout


@pytest.mark.parametrize("command", ["new", "generate", "chat", "quickstart"])
def test_every_command_has_an_example(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "example:" in capsys.readouterr().out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from omnilm.testing import tiny_model

    return str(tiny_model(("image", "audio")).save(tmp_path_factory.mktemp("ckpt") / "model"))


def test_new_dry_run_and_build(tmp_path):
    from omnilm.testing import tiny_config

    config = tmp_path / "model.yaml"
    config.write_text(tiny_config(("image",)).to_yaml())
    assert main(["new", str(config), str(tmp_path / "out"), "--dry-run"]) == 0
    assert not (tmp_path / "out").exists()
    assert main(["new", str(config), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "omnilm.json").is_file()


def test_new_reports_a_bad_config(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("llm: {source: x}\nvision: {source: y, pooling: maximum}\n")
    assert main(["new", str(config), str(tmp_path / "out"), "--dry-run"]) == 2
    assert "vision.pooling" in capsys.readouterr().err


def test_generate_with_media(checkpoint, tmp_path, png_bytes, wav_path, capsys):
    image = tmp_path / "red.png"
    image.write_bytes(png_bytes)
    code = main(["generate", checkpoint, "--prompt", "what?", "--image", str(image), "--audio", str(wav_path),
                 "--max-new-tokens", "5"])
    assert code == 0
    from omnilm import load

    expected = load(checkpoint).chat(
        [{"role": "user", "content": [{"type": "image", "image": str(image)}, {"type": "audio", "audio": str(wav_path)},
                                      {"type": "text", "text": "what?"}]}], max_new_tokens=5)
    assert capsys.readouterr().out == expected + "\n"


def test_generate_bad_media_is_a_clean_error(checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["generate", checkpoint, "--prompt", "x", "--image", str(bad)]) == 2
    assert "not a readable image" in capsys.readouterr().err


def test_chat_session(checkpoint, tmp_path, png_bytes):
    from omnilm.cli import chat

    image = tmp_path / "red.png"
    image.write_bytes(png_bytes)
    script = f"/image {image}\nwhat colour?\n/video {image}\n/image /nope.png\nand now?\n/reset\n/quit\n"
    out = io.StringIO()
    args = chat.register.__globals__["argparse"].Namespace(
        model=checkpoint, system=None, max_new_tokens=4, temperature=0.0, top_p=1.0, seed=None, device=None
    )
    assert chat.run(args, stdin=io.StringIO(script), stdout=out) == 0
    text = out.getvalue()
    assert "attached image red.png" in text
    assert "does not take video" in text
    assert "does not exist" in text
    assert "conversation cleared" in text


def test_train_console_shows_omnilm_lines_not_accelerate_info(tmp_path, capsys):
    from omnilm.data.toy import build_shapes

    shapes = Path(build_shapes(tmp_path / "shapes", train=8, test=2, seed=0)["dir"])
    config = Path(__file__).resolve().parents[1] / "configs" / "tiny-image.yaml"
    settings = (f"output_dir={tmp_path / 'out'}", f"data.train={shapes / 'train.jsonl'}", "data.eval=null",
                "optim.batch_size=4", "optim.max_steps=2", "save_every=1", f"feature_cache.dir={tmp_path / 'features'}")
    assert main(["train", str(config), *(arg for s in settings for arg in ("--set", s))]) == 0
    err = capsys.readouterr().err
    assert "INFO omnilm.training.checkpointing: saved checkpoint" in err
    assert "accelerate" not in err  # five INFO lines per checkpoint, hidden by the one logging setup


def test_console_hides_libraries_future_warnings_unless_verbose():
    import warnings

    from omnilm.cli.main import logging_setup

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with logging_setup(verbose=False):
            warnings.warn("deprecated between libraries", FutureWarning, stacklevel=1)
        with logging_setup(verbose=True):
            warnings.warn("shown when verbose", FutureWarning, stacklevel=1)
        warnings.warn("shown after the command", FutureWarning, stacklevel=1)  # the filter is undone on exit
    assert [str(w.message) for w in seen] == ["shown when verbose", "shown after the command"]
