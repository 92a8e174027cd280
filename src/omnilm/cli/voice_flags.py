"""The voice flags of `omnilm serve` (--asr, --tts, …) and the VoiceSettings they make."""

from __future__ import annotations

import argparse

from omnilm.cli.common import fields_from_args


def add_voice_flags(parser: argparse.ArgumentParser) -> None:
    from omnilm.serve.voice import VoiceSettings

    default = VoiceSettings()
    voice = parser.add_argument_group("voice: /v1/audio/* and spoken replies")
    voice.add_argument("--asr", default=None, metavar="REF",
                       help="Whisper for /v1/audio/transcriptions, e.g. pkg:whisper-base (default: the model's own)")
    voice.add_argument("--asr-beams", type=int, default=default.asr_beams, help="beam width of --asr (default 5)")
    voice.add_argument("--tts", default=default.tts, choices=["espeak", "piper", "none"],
                       help="speech engine (default espeak: espeak-ng; piper needs --tts-voice-file)")
    voice.add_argument("--tts-voice-file", default=None, metavar="VOICE.onnx", help="piper voice (+ VOICE.onnx.json)")
    voice.add_argument("--max-upload-mb", type=float, default=25.0, help="audio file size to transcribe (default 25)")
    voice.add_argument("--max-transcribe-seconds", type=float, default=default.max_transcribe_seconds,
                       help="duration of an audio file to transcribe (default 1800)")
    voice.add_argument("--max-speech-chars", type=int, default=default.max_speech_chars,
                       help="text length one /v1/audio/speech request speaks (default 4096)")


def voice_settings_from_args(args: argparse.Namespace):
    from omnilm.serve.voice import VoiceSettings

    return VoiceSettings(**fields_from_args(VoiceSettings, args), max_upload_bytes=int(args.max_upload_mb * 2**20))
