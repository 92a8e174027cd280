"""The speech package without Whisper: encoding, sentences, windows, captions, the engines and their choice."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from omnilm.errors import ConfigError, OmniError
from omnilm.media import load_audio
from omnilm.speech.asr import Segment, Transcript, speech_windows
from omnilm.speech.captions import render
from omnilm.speech.encode import FORMATS, OUTPUT_RATE, audio_format, encode_audio
from omnilm.speech.sentences import SentenceSplitter
from omnilm.speech.tts import OPENAI_VOICES, load_engine

espeak = pytest.mark.requires_tool("espeak-ng")


def tone(seconds: float, rate: int = 22_050) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "pcm"])
def test_every_format_decodes_back_to_the_same_duration(fmt):
    import av

    data = encode_audio(tone(1.5), 22_050, fmt)
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        assert stream.channels == 1
        assert stream.rate == (48_000 if fmt == "opus" else OUTPUT_RATE)  # Ogg Opus always decodes at 48 kHz
    assert load_audio(data).size / 16_000 == pytest.approx(1.5, abs=0.08)


def test_pcm_is_raw_24khz_16bit_samples():
    data = encode_audio(tone(1.0), 22_050, "pcm16")  # chat completions' name for it
    assert len(data) == pytest.approx(2 * OUTPUT_RATE, abs=64)
    samples = np.frombuffer(data, "<i2")
    assert 0.25 < np.abs(samples).max() / 32767 < 0.35


def test_unknown_format_names_the_valid_ones():
    with pytest.raises(OmniError, match="mp3, opus, aac, flac, wav, pcm"):
        audio_format("ogg-vorbis")


def test_sentences_complete_as_the_text_streams():
    splitter, done = SentenceSplitter(), []
    for piece in ["Hello", " there.", " How are", " you? I", " am fine", '!" Pi is 3.14', " today.\nA list"]:
        done.append(splitter.feed(piece))
    # a full stop ends a sentence once white space follows it ("3.14" does not end one)
    assert done == [[], [], ["Hello there."], ["How are you?"], [], ['I am fine!"'], ["Pi is 3.14 today."]]
    assert splitter.flush() == ["A list"] and splitter.flush() == []
    assert SentenceSplitter().feed("... ?! ") == []  # nothing to say


def test_windows_start_at_the_sound_and_cut_in_a_pause():
    rate = 16_000
    speech = tone(12.0, rate)
    gap = np.zeros(int(3.0 * rate), np.float32)
    audio = np.concatenate([np.zeros(2 * rate, np.float32), speech, gap, speech, gap, speech])  # 2 + 12+3+12+3+12 s
    windows = speech_windows(audio, rate)
    starts = [start / rate for start, _ in windows]
    assert starts[0] == pytest.approx(1.7, abs=0.03)  # 0.3 s before the first sound
    assert all(clip.size / rate <= 30.0 for _, clip in windows)
    for start, clip in windows[:-1]:  # every cut falls in a silent gap, not inside a tone
        end = (start + clip.size) / rate
        assert any(a <= end <= a + 3.0 for a in (14.0, 29.0)), end
    assert sum(clip.size for _, clip in windows) >= 3 * speech.size
    assert speech_windows(np.zeros(rate, np.float32), rate) == []


def test_captions_in_each_format():
    segments = [Segment(0, 0.5, 2.25, " Hello there.", [1]), Segment(1, 3661.0, 3662.5, " Goodbye.", [2])]
    transcript = Transcript("Hello there. Goodbye.", "en", 3663.0, segments=segments)
    assert render(transcript, "json") == {"text": "Hello there. Goodbye."}
    assert render(transcript, "text") == "Hello there. Goodbye.\n"
    assert render(transcript, "srt") == ("1\n00:00:00,500 --> 00:00:02,250\nHello there.\n\n"
                                         "2\n01:01:01,000 --> 01:01:02,500\nGoodbye.\n")
    assert render(transcript, "vtt") == ("WEBVTT\n\n00:00:00.500 --> 00:00:02.250\nHello there.\n\n"
                                         "01:01:01.000 --> 01:01:02.500\nGoodbye.\n")
    verbose = render(transcript, "verbose_json")
    assert verbose["language"] == "english" and verbose["duration"] == 3663.0
    assert [s["start"] for s in verbose["segments"]] == [0.5, 3661.0]
    json.dumps(verbose)


@espeak
def test_espeak_speaks_each_openai_voice_differently():
    engine = load_engine("espeak")
    spoken = {}
    for name in OPENAI_VOICES:
        samples, rate = engine.synthesize("Good morning.", voice=name)
        assert samples.size / rate > 0.4
        spoken[name] = samples.size
    assert len({engine.check_voice(name) for name in OPENAI_VOICES}) == len(OPENAI_VOICES)
    assert engine.check_voice("fr-fr") == "fr-fr" and engine.check_voice("de+m3") == "de+m3"


@espeak
def test_espeak_speed_changes_the_duration():
    engine = load_engine("espeak")
    normal = engine.synthesize("One two three four five six.", voice="alloy")[0].size
    for speed, ratio in [(2.0, 0.5), (0.25, 4.0), (4.0, 0.25)]:
        size = engine.synthesize("One two three four five six.", voice="alloy", speed=speed)[0].size
        assert size / normal == pytest.approx(ratio, rel=0.35), speed
    with pytest.raises(OmniError, match="between 0.25 and 4.0"):
        engine.synthesize("x", voice="alloy", speed=5)


@espeak
def test_text_and_voice_are_data_not_command_line(tmp_path):
    engine = load_engine("espeak")
    target = tmp_path / "owned"
    # text that would be flags or shell syntax on a command line is just spoken
    samples, rate = engine.synthesize(f"-w {target} --version; touch {target} $(touch {target})", voice="alloy")
    assert samples.size / rate > 1.0 and not target.exists()
    for voice in ["-w /tmp/x", "en-us; touch x", "en-us+--stdout", "../../etc/passwd", "nobody"]:
        with pytest.raises(OmniError, match="unknown voice"):
            engine.check_voice(voice)


def test_engine_choice_and_its_errors(tmp_path, monkeypatch):
    with pytest.raises(OmniError, match="unknown speech engine 'festival'; choose one of espeak, piper"):
        load_engine("festival")
    with pytest.raises(OmniError, match="--tts-voice-file is for --tts piper"):
        load_engine("espeak", voice_file=tmp_path / "v.onnx")
    pytest.importorskip("piper", reason="pip install piper-tts")
    with pytest.raises(OmniError, match="needs a voice: pass --tts-voice-file"):
        load_engine("piper")
    with pytest.raises(OmniError, match="needs both v.onnx and v.onnx.json"):
        load_engine("piper", voice_file=tmp_path / "v.onnx")
    monkeypatch.setitem(__import__("sys").modules, "piper", None)  # piper-tts not installed
    with pytest.raises(OmniError, match="pip install piper-tts"):
        load_engine("piper", voice_file=tmp_path / "v.onnx")


def test_voice_settings_are_checked():
    from omnilm.serve.voice import VoiceSettings

    with pytest.raises(ConfigError) as err:
        VoiceSettings(tts="festival")
    assert err.value.field == "tts"
    with pytest.raises(ConfigError):
        VoiceSettings(max_speech_chars=0)
