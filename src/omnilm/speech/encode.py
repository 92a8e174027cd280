"""Speech samples → the audio file formats of OpenAI's API, encoded with PyAV (FFmpeg); no other tool.

Every format is written at 24 kHz mono, as OpenAI's are; `pcm` is raw signed 16-bit little-endian samples.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from omnilm.errors import OmniError

OUTPUT_RATE = 24_000  # OpenAI's speech is 24 kHz; every codec below takes it


@dataclass(frozen=True)
class AudioFormat:
    """How one `response_format` is written: FFmpeg's container and codec names and the HTTP media type."""

    container: str | None  # None: raw samples, no container
    codec: str
    media_type: str


FORMATS = {
    "mp3": AudioFormat("mp3", "libmp3lame", "audio/mpeg"),
    "opus": AudioFormat("ogg", "libopus", "audio/ogg"),
    "aac": AudioFormat("adts", "aac", "audio/aac"),
    "flac": AudioFormat("flac", "flac", "audio/flac"),
    "wav": AudioFormat("wav", "pcm_s16le", "audio/wav"),
    "pcm": AudioFormat(None, "pcm_s16le", "audio/pcm"),
}
ALIASES = {"pcm16": "pcm"}  # chat completions' name for raw 16-bit samples


def audio_format(name: str) -> str:
    """The canonical name of a response format; an unknown one is an OmniError listing the valid ones."""
    canonical = ALIASES.get(name, name)
    if canonical not in FORMATS:
        raise OmniError(f"unknown audio format {name!r}; choose one of {', '.join(FORMATS)}")
    return canonical


def encode_audio(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    """Mono float samples in [-1, 1] at `rate` Hz (N,) → the bytes of a `fmt` file at 24 kHz."""
    spec = FORMATS[audio_format(fmt)]
    pcm = resample_to_int16(samples, rate, OUTPUT_RATE)  # (N',) int16
    if spec.container is None:
        return pcm.astype("<i2").tobytes()
    return _encode(pcm, spec)


def resample_to_int16(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Mono float samples (N,) → int16 samples (N',) at `target` Hz, through FFmpeg's resampler."""
    import av

    frame = av.AudioFrame.from_ndarray(np.clip(samples, -1.0, 1.0).astype(np.float32)[None, :], format="flt",
                                       layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="s16", layout="mono", rate=target)
    chunks = [f.to_ndarray().reshape(-1) for f in (*resampler.resample(frame), *resampler.resample(None))]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


def _encode(pcm: np.ndarray, spec: AudioFormat) -> bytes:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format=spec.container) as container:
        stream = container.add_stream(spec.codec, rate=OUTPUT_RATE, layout="mono")
        codec_format = stream.codec_context.format.name  # e.g. s16 (wav), s16p (mp3), flt (opus), fltp (aac)
        frame_size = stream.codec_context.frame_size or 4096  # 0: the codec takes frames of any size
        resampler = av.AudioResampler(format=codec_format, layout="mono", rate=OUTPUT_RATE, frame_size=frame_size)
        source = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
        source.sample_rate = OUTPUT_RATE
        for frame in (*resampler.resample(source), *resampler.resample(None)):
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()
