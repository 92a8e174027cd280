"""`omnilm serve`'s voice flags and `omnilm chat --speak` / `--speak-dir`."""

from __future__ import annotations

import argparse
import io

import pytest

from omnilm.cli import chat
from omnilm.cli.main import build_parser, main
from omnilm.cli.voice_flags import voice_settings_from_args
from omnilm.errors import ConfigError
from omnilm.media import load_audio


def test_voice_flags_become_settings():
    args = build_parser().parse_args(["serve", "model", "--asr", "pkg:whisper-base", "--asr-beams", "1",
                                      "--tts", "piper", "--tts-voice-file", "v.onnx", "--max-upload-mb", "2",
                                      "--max-transcribe-seconds", "60", "--max-speech-chars", "500"])
    voice = voice_settings_from_args(args)
    assert (voice.asr, voice.asr_beams, voice.tts, voice.tts_voice_file) == ("pkg:whisper-base", 1, "piper", "v.onnx")
    assert (voice.max_upload_bytes, voice.max_transcribe_seconds, voice.max_speech_chars) == (2 * 2**20, 60.0, 500)
    defaults = voice_settings_from_args(build_parser().parse_args(["serve", "model"]))
    assert (defaults.asr, defaults.tts, defaults.max_upload_bytes) == (None, "espeak", 25 * 2**20)
    with pytest.raises(ConfigError, match="asr_beams"):
        voice_settings_from_args(build_parser().parse_args(["serve", "model", "--asr-beams", "0"]))


def test_serve_refuses_piper_without_a_voice_file(tmp_path, capsys):
    pytest.importorskip("piper", reason="pip install piper-tts")
    from omnilm.testing import tiny_model

    model = tiny_model(("image",)).save(tmp_path / "tiny")
    assert main(["serve", str(model), "--tts", "piper"]) == 2
    assert "needs a voice: pass --tts-voice-file" in capsys.readouterr().err


@pytest.mark.requires_tool("espeak-ng")
def test_chat_speak_dir_writes_each_sentence(tmp_path):
    from omnilm.speech.player import SentenceSpeaker
    from omnilm.speech.tts import load_engine

    class ScriptedLM:  # answers in two sentences, streamed in pieces
        name, modalities = "script", ()

        def stream(self, messages, **gen):
            yield from ["Hello", " there.", " The sky", " is blue."]

    speaker = SentenceSpeaker(load_engine("espeak"), voice="shimmer", out_dir=tmp_path / "replies")
    session = chat.ChatSession(ScriptedLM(), speaker=speaker)
    out = io.StringIO()
    session.handle("hi", out)
    session.handle("again", out)
    speaker.close()
    names = [p.name for p in speaker.written]
    assert names == ["reply-000-00.wav", "reply-000-01.wav", "reply-001-00.wav", "reply-001-01.wav"]
    assert all(load_audio(p).size > 8_000 for p in speaker.written)
    assert out.getvalue().count("Hello there. The sky is blue.") == 2


@pytest.mark.requires_tool("espeak-ng")
def test_chat_run_with_speak_dir(tmp_path):
    from omnilm.testing import tiny_model

    model = str(tiny_model(("image",)).save(tmp_path / "tiny"))
    args = argparse.Namespace(model=model, system=None, stop=None, max_new_tokens=8, temperature=0.0, top_p=1.0,
                              seed=None, device=None, speak=False, speak_dir=str(tmp_path / "out"), voice="alloy")
    out = io.StringIO()
    assert chat.run(args, stdin=io.StringIO("hello\n"), stdout=out) == 0
    assert f"written to {tmp_path / 'out'}/" in out.getvalue()
    assert min(p.name for p in (tmp_path / "out").iterdir()) == "reply-000-00.wav"


def test_chat_refuses_an_unknown_voice_before_loading(capsys):
    assert main(["chat", "/no/such/model", "--speak", "--voice", "nobody"]) == 2
    assert "unknown voice 'nobody'" in capsys.readouterr().err


@pytest.mark.requires_tool("espeak-ng")
def test_speak_plays_each_sentence_with_the_player(tmp_path):
    import sys

    from omnilm.speech.player import SentenceSpeaker
    from omnilm.speech.tts import load_engine

    played = tmp_path / "played"
    played.mkdir()
    player = tmp_path / "player.py"  # a stand-in audio player: keeps what it was given to play
    player.write_text("import shutil, sys, pathlib\n"
                      f"out = pathlib.Path({str(played)!r})\n"
                      "shutil.copy(sys.argv[1], out / f'{len(list(out.iterdir())):02d}.wav')\n")
    speaker = SentenceSpeaker(load_engine("espeak"), player=[sys.executable, str(player)])
    assert speaker.out_dir is None
    for sentence in ["First sentence.", "Second one!"]:
        speaker.say(sentence)
    speaker.end_turn()
    speaker.close()
    files = sorted(played.iterdir())
    assert [f.name for f in files] == ["00.wav", "01.wav"] and all(load_audio(f).size > 8_000 for f in files)
