"""A transcript in the `response_format`s of OpenAI's transcription API: json, text, srt, vtt, verbose_json."""

from __future__ import annotations

from omnilm.errors import OmniError
from omnilm.speech.asr import Transcript

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
MEDIA_TYPES = {"json": "application/json", "verbose_json": "application/json", "text": "text/plain",
               "srt": "application/x-subrip", "vtt": "text/vtt"}


def check_response_format(name: str) -> str:
    if name not in RESPONSE_FORMATS:
        raise OmniError(f"unknown response_format {name!r}; choose one of {', '.join(RESPONSE_FORMATS)}")
    return name


def render(transcript: Transcript, fmt: str) -> dict | str:
    """A dict for the JSON formats, the file's text for the others."""
    if fmt == "json":
        return {"text": transcript.text}
    if fmt == "verbose_json":
        return {"task": transcript.task, "language": transcript.language_name,
                "duration": round(transcript.duration, 2), "text": transcript.text,
                "segments": [s.as_dict() for s in transcript.segments]}
    if fmt == "text":
        return transcript.text + "\n"
    if fmt == "srt":
        cues = [f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n"
                for i, s in enumerate(transcript.segments, start=1)]
        return "\n".join(cues)
    if fmt == "vtt":
        cues = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n" for s in transcript.segments]
        return "\n".join(["WEBVTT\n", *cues])
    raise OmniError(f"unknown response_format {fmt!r}; choose one of {', '.join(RESPONSE_FORMATS)}")


def _clock(seconds: float, decimal: str) -> str:
    """12.5 → 00:00:12,500 (SRT) or 00:00:12.500 (WebVTT)."""
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{decimal}{rest % 1000:03d}"
