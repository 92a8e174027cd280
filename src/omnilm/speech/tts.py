"""Text-to-speech engines: espeak-ng (default, offline, a Debian package) and piper (neural, a PyPI package
whose voices are `.onnx` files the user brings). Each maps OpenAI's voice names onto its own voices.

The text always reaches an engine as data: espeak-ng reads it from stdin, with a fixed argument list whose
voice is checked against the engine's own list; piper takes it as a Python string.
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omnilm.errors import OmniError

logger = logging.getLogger(__name__)

# OpenAI's voice names (what clients send by default), in the order OpenAI lists them
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse",
                 "marin", "cedar")
# … and the espeak-ng voice ("language+variant") each one speaks with: distinct pitch and timbre, all English
ESPEAK_VOICES = {"alloy": "en-us", "ash": "en-us+m3", "ballad": "en-gb+m4", "coral": "en-us+f2",
                 "echo": "en-us+m2", "fable": "en-gb", "onyx": "en-us+m7", "nova": "en-us+f3",
                 "sage": "en-gb-x-rp+f4", "shimmer": "en-us+f4", "verse": "en-us+m5", "marin": "en-us+f5",
                 "cedar": "en-gb+m6"}
ESPEAK_WORDS_PER_MINUTE = 175  # espeak-ng's default rate: speed 1.0
ESPEAK_RATE_RANGE = (80, 450)  # words per minute espeak-ng speaks at; other speeds are stretched by PyAV
SPEED_RANGE = (0.25, 4.0)  # OpenAI's range for `speed`
_VOICE_NAME = re.compile(r"[a-z0-9-]+(\+[A-Za-z0-9_-]+)?")


@dataclass(frozen=True)
class Voice:
    """One voice a client may ask for: `id` is the name sent, `engine_voice` what the engine speaks with."""

    id: str
    engine_voice: str
    language: str

    def card(self, engine: str) -> dict:
        return {"id": self.id, "object": "voice", "engine": engine, "engine_voice": self.engine_voice,
                "language": self.language}


class SpeechEngine:
    """An engine: `voices()` it offers and `synthesize(text, voice=, speed=) -> (samples (N,) float32, rate)`."""

    name = "engine"

    def voices(self) -> list[Voice]:
        raise NotImplementedError

    def synthesize(self, text: str, *, voice: str, speed: float = 1.0) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def voice(self, name: str) -> Voice:
        """The voice called `name` (an OpenAI name or one of the engine's); unknown: an OmniError listing them."""
        for voice in self.voices():
            if voice.id == name:
                return voice
        openai = ", ".join(v.id for v in self.voices() if v.id in OPENAI_VOICES)
        raise OmniError(f"unknown voice {name!r} for {self.name}; OpenAI's names ({openai}) work, and "
                        "GET /v1/audio/voices lists all of this engine's voices")

    def check_voice(self, name: str) -> str:
        """The engine's own voice for `name`; unknown: an OmniError listing the voices."""
        return self.voice(name).engine_voice


def check_speed(speed: float) -> float:
    if not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]:
        raise OmniError(f"speed is {speed}; it must lie between {SPEED_RANGE[0]} and {SPEED_RANGE[1]}")
    return float(speed)


class EspeakEngine(SpeechEngine):
    """espeak-ng through its command line: text on stdin, a WAV file out; any language espeak-ng speaks."""

    name = "espeak-ng"

    def __init__(self, *, executable: str = "espeak-ng") -> None:
        path = shutil.which(executable)
        if path is None:
            raise OmniError("espeak-ng is not installed; install it (`apt-get install espeak-ng`, or "
                            "`make system-deps`) or choose another engine with --tts")
        self.executable = path

    @functools.cached_property
    def _engine_voices(self) -> tuple[frozenset[str], frozenset[str]]:
        """The languages and the variants installed, read from espeak-ng's own lists."""
        languages = self._listing("--voices", variants=False)
        return frozenset(languages), frozenset(self._listing("--voices=variant", variants=True))

    def _listing(self, flag: str, *, variants: bool) -> list[str]:
        out = subprocess.run([self.executable, flag], capture_output=True, text=True, check=True).stdout
        names = []
        for line in out.splitlines()[1:]:
            fields = line.split()
            if len(fields) < 5 or fields[4].startswith("mb/"):  # mbrola voices need mbrola, not installed
                continue
            names.append(fields[4].removeprefix("!v/") if variants else fields[1])
        return names

    def voices(self) -> list[Voice]:
        languages, variants = self._engine_voices
        mapped = [Voice(name, ESPEAK_VOICES[name], ESPEAK_VOICES[name].split("+")[0]) for name in OPENAI_VOICES]
        own = [Voice(language, language, language) for language in sorted(languages)]
        own += [Voice(f"en-us+{variant}", f"en-us+{variant}", "en-us") for variant in sorted(variants)]
        return mapped + own

    def check_voice(self, name: str) -> str:
        if name in ESPEAK_VOICES:
            return ESPEAK_VOICES[name]
        languages, variants = self._engine_voices
        language, _, variant = name.partition("+")
        if _VOICE_NAME.fullmatch(name) and language in languages and (not variant or variant in variants):
            return name  # any installed language, with any installed variant
        return self.voice(name).engine_voice  # raises, listing the voices

    def synthesize(self, text: str, *, voice: str, speed: float = 1.0) -> tuple[np.ndarray, int]:
        import soundfile

        engine_voice = self.check_voice(voice)
        wpm = ESPEAK_WORDS_PER_MINUTE * check_speed(speed)
        rate = int(min(max(wpm, ESPEAK_RATE_RANGE[0]), ESPEAK_RATE_RANGE[1]))
        with tempfile.TemporaryDirectory(prefix="omnilm-tts-") as tmp:
            out = Path(tmp) / "speech.wav"
            command = [self.executable, "--stdin", "-b", "1", "-v", engine_voice, "-s", str(rate), "-w", str(out)]
            done = subprocess.run(command, input=text.encode("utf-8"), capture_output=True, timeout=120,
                                  check=False)
            if done.returncode != 0 or not out.exists():
                raise RuntimeError(f"espeak-ng failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
            samples, sample_rate = soundfile.read(out, dtype="float32")
        return stretch(samples, sample_rate, wpm / rate), sample_rate


class PiperEngine(SpeechEngine):
    """piper-tts with a voice the user brings (`voice.onnx` beside its `voice.onnx.json`); speakers of a
    multi-speaker voice are its voices, and OpenAI's names take them in turn."""

    name = "piper"

    def __init__(self, *, voice_file: str | Path | None) -> None:
        try:
            from piper import PiperVoice
        except ImportError:
            raise OmniError("the piper engine needs piper-tts: pip install piper-tts") from None
        if voice_file is None:
            raise OmniError("the piper engine needs a voice: pass --tts-voice-file VOICE.onnx (a piper voice, with "
                            "VOICE.onnx.json beside it; see https://github.com/OHF-Voice/piper1-gpl for voices)")
        path = Path(voice_file).expanduser()
        config = path.with_name(path.name + ".json")
        if not path.is_file() or not config.is_file():
            raise OmniError(f"piper voice {path} not found: it needs both {path.name} and {config.name}")
        self.path = path
        self.model = PiperVoice.load(path, config_path=config)
        self.speakers = sorted(self.model.config.speaker_id_map, key=self.model.config.speaker_id_map.get) or [
            path.stem]

    def voices(self) -> list[Voice]:
        language = self.model.config.espeak_voice
        mapped = [Voice(name, self.speakers[i % len(self.speakers)], language) for i, name in enumerate(OPENAI_VOICES)]
        return mapped + [Voice(s, s, language) for s in self.speakers if s not in OPENAI_VOICES]

    def synthesize(self, text: str, *, voice: str, speed: float = 1.0) -> tuple[np.ndarray, int]:
        from piper import SynthesisConfig

        speaker = self.check_voice(voice)
        speaker_id = self.model.config.speaker_id_map.get(speaker)
        config = SynthesisConfig(speaker_id=speaker_id, length_scale=1.0 / check_speed(speed))
        chunks = [chunk.audio_float_array for chunk in self.model.synthesize(text, syn_config=config)]
        rate = self.model.config.sample_rate
        return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), rate


ENGINES = {"espeak": EspeakEngine, "piper": PiperEngine}


def load_engine(name: str, *, voice_file: str | Path | None = None) -> SpeechEngine:
    """The engine called `name` (`espeak` or `piper`); piper needs the user's voice file."""
    if name not in ENGINES:
        raise OmniError(f"unknown speech engine {name!r}; choose one of {', '.join(ENGINES)}")
    if name == "piper":
        return PiperEngine(voice_file=voice_file)
    if voice_file is not None:
        raise OmniError("--tts-voice-file is for --tts piper; espeak-ng's voices are built in")
    return EspeakEngine()


def stretch(samples: np.ndarray, rate: int, factor: float) -> np.ndarray:
    """Samples (N,) played `factor` times as fast, pitch kept (FFmpeg's atempo filter); 1.0 returns them."""
    if abs(factor - 1.0) < 1e-3 or samples.size == 0:
        return samples
    import av

    graph = av.filter.Graph()
    source = graph.add_abuffer(format="flt", sample_rate=rate, layout="mono", time_base=f"1/{rate}")
    tempo = graph.add("atempo", f"{factor:.4f}")
    sink = graph.add("abuffersink")
    source.link_to(tempo)
    tempo.link_to(sink)
    graph.configure()
    frame = av.AudioFrame.from_ndarray(samples.astype(np.float32)[None, :], format="flt", layout="mono")
    frame.sample_rate, frame.pts = rate, 0
    graph.push(frame)
    graph.push(None)
    out = []
    while True:
        try:
            out.append(graph.pull().to_ndarray().reshape(-1))
        except (av.BlockingIOError, av.EOFError):
            break
    return np.concatenate(out).astype(np.float32) if out else samples
