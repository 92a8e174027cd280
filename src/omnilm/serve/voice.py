"""The voice services of a server: its speech recognizer and speech engine, with their limits."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

from omnilm.configkit import check_fields, require
from omnilm.errors import OmniError
from omnilm.speech.asr import Recognizer, Transcript
from omnilm.speech.encode import audio_format, encode_audio
from omnilm.speech.tts import ENGINES, SpeechEngine, load_engine

logger = logging.getLogger(__name__)


@dataclass
class VoiceSettings:
    """`omnilm serve`'s voice flags (--asr, --tts, --tts-voice-file and the limits)."""

    asr: str | None = None  # a Whisper beside the model (pkg:whisper-base, a directory); None: the model's own
    asr_beams: int = 5  # beam width of --asr's Whisper (its own default); 1: greedy, ~2.5x faster on a CPU
    tts: str = "espeak"  # espeak | piper | none
    tts_voice_file: str | None = None  # piper's VOICE.onnx (with VOICE.onnx.json beside it)
    max_upload_bytes: int = 25 * 2**20  # one uploaded audio file (OpenAI's limit)
    max_transcribe_seconds: float = 1800.0  # one uploaded file's duration
    max_speech_chars: int = 4096  # text spoken by one /v1/audio/speech request (OpenAI's limit)

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.tts in (*ENGINES, "none"), "tts", f"must be one of {', '.join((*ENGINES, 'none'))}")
        for name in ("asr_beams", "max_upload_bytes", "max_transcribe_seconds", "max_speech_chars"):
            require(getattr(self, name) > 0, name, f"must be positive, got {getattr(self, name)!r}")


class Voice:
    """What the audio routes and spoken chat replies use: `recognizer` and `engine` (either may be None)."""

    def __init__(self, *, recognizer: Recognizer | None, engine: SpeechEngine | None,
                 settings: VoiceSettings) -> None:
        self.recognizer, self.engine, self.settings = recognizer, engine, settings
        self._lock = threading.Lock()  # one transcription at a time: Whisper already uses every core

    @classmethod
    def for_model(cls, lm, settings: VoiceSettings | None = None) -> Voice:
        """The recognizer named by --asr (else the model's own Whisper, if it transcribes) and the engine."""
        settings = settings or VoiceSettings()
        if settings.asr is not None:
            recognizer = Recognizer.load(settings.asr, num_beams=settings.asr_beams)
        else:
            transcriber = getattr(lm.processor, "transcriber", None)
            recognizer = Recognizer.of_transcriber(transcriber) if transcriber is not None else None
        engine = None
        if settings.tts != "none":
            try:
                engine = load_engine(settings.tts, voice_file=settings.tts_voice_file)
            except OmniError:
                if settings.tts != "espeak" or settings.tts_voice_file is not None:
                    raise  # a choice the user made: say why it cannot be honoured
                logger.warning("espeak-ng is not installed: /v1/audio/speech and spoken replies are off")
        return cls(recognizer=recognizer, engine=engine, settings=settings)

    def transcribe(self, samples: np.ndarray, **options) -> Transcript:
        with self._lock:
            return self.recognizer.transcribe(samples, **options)

    def speak(self, text: str, *, voice: str, fmt: str, speed: float = 1.0) -> bytes:
        """`text` spoken by `voice`, as the bytes of a `fmt` file."""
        fmt = audio_format(fmt)
        samples, rate = self.engine.synthesize(text, voice=voice, speed=speed)
        return encode_audio(samples, rate, fmt)
