"""Reading images, audio and video from paths, bytes, data URLs or in-memory objects, with size limits.

Every failure raises `MediaError` naming the item and what to do; nothing here crashes on bad bytes.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from omnilm.errors import MediaError

DEFAULT_MAX_PIXELS = 40_000_000  # refuse decompression bombs before decoding (PIL's own limit is ~179 Mpx)
WHISPER_SAMPLING_RATE = 16_000


def _describe(item: Any) -> str:
    if isinstance(item, (str, Path)):
        text = str(item)
        return text[:60] + "…" if len(text) > 60 else text
    return f"<{type(item).__name__}>"


def decode_data_url(url: str) -> bytes:
    """Bytes of a `data:<mime>;base64,<payload>` URL."""
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:") or ";base64" not in header:
        raise MediaError("malformed data URL: expected 'data:<mime>;base64,<payload>'")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise MediaError("the data URL's base64 payload is broken; re-encode the file with standard base64") from None


def read_bytes(item: str | Path | bytes, kind: str) -> bytes | str:
    """Raw bytes for bytes / data URLs, or a checked filesystem path for paths."""
    if isinstance(item, (bytes, bytearray)):
        if not item:
            raise MediaError(f"the {kind} is empty (0 bytes)")
        return bytes(item)
    if isinstance(item, str) and item.startswith("data:"):
        return decode_data_url(item)
    if isinstance(item, str) and item.startswith(("http://", "https://")):
        raise MediaError(f"{kind} URL {_describe(item)}: remote URLs are not fetched here; download the file first")
    path = Path(item)
    if not path.is_file():
        raise MediaError(f"{kind} file {_describe(item)} does not exist")
    return str(path)


# Images ----------------------------------------------------------------------------------------
def load_image(item: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An RGB PIL image from a path, bytes, data URL, PIL image or HWC uint8 array."""
    if isinstance(item, Image.Image):
        image = item
    elif isinstance(item, np.ndarray):
        image = Image.fromarray(item)
    else:
        source = read_bytes(item, "image")
        try:
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        except (UnidentifiedImageError, OSError) as err:
            raise MediaError(f"image {_describe(item)} is not a readable image ({err})") from None
        except Image.DecompressionBombError as err:
            raise MediaError(f"image {_describe(item)} is too large: {err}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise MediaError(f"image {_describe(item)} has {width}x{height} pixels, over the limit of {max_pixels}; resize it")
    try:
        image.load()
        return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as err:
        raise MediaError(f"image {_describe(item)} is truncated or corrupt ({err})") from None


# Audio -----------------------------------------------------------------------------------------
def load_audio(
    item: Any, *, sampling_rate: int = WHISPER_SAMPLING_RATE, max_seconds: float | None = None
) -> np.ndarray:
    """Mono float32 samples at `sampling_rate` from a path, bytes, data URL or (array, rate) pair."""
    if isinstance(item, tuple) and len(item) == 2:
        samples, rate = np.asarray(item[0], dtype=np.float32), int(item[1])
    elif isinstance(item, np.ndarray):
        samples, rate = item.astype(np.float32), sampling_rate
    else:
        samples, rate = _decode_audio(read_bytes(item, "audio"), _describe(item))
    if samples.ndim == 2:  # (frames, channels) → mono
        samples = samples.mean(axis=1)
    if samples.ndim != 1:
        raise MediaError(f"audio {_describe(item)}: expected 1-D samples or (frames, channels), got {samples.shape}")
    if samples.size == 0:
        raise MediaError(f"audio {_describe(item)} is empty (0 samples)")
    if not np.isfinite(samples).all():
        raise MediaError(f"audio {_describe(item)} holds NaN or infinite samples")
    seconds = samples.size / rate
    if max_seconds is not None and seconds > max_seconds + 1e-6:
        raise MediaError(f"audio {_describe(item)} lasts {seconds:.1f} s, over the limit of {max_seconds:.1f} s; trim it")
    return resample(samples, rate, sampling_rate)


def _decode_audio(source: bytes | str, name: str) -> tuple[np.ndarray, int]:
    import soundfile

    try:
        data, rate = soundfile.read(io.BytesIO(source) if isinstance(source, bytes) else source, dtype="float32")
        return data, rate
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        pass  # not a container libsndfile reads: try FFmpeg through PyAV (m4a, webm, …)
    try:
        return _decode_audio_av(source)
    except Exception as err:  # PyAV raises many error types for non-audio bytes
        raise MediaError(f"audio {name} is not a readable audio file (WAV, FLAC, MP3, OGG…): {err}") from None


def _decode_audio_av(source: bytes | str) -> tuple[np.ndarray, int]:
    import av

    with av.open(io.BytesIO(source) if isinstance(source, bytes) else source) as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray() for frame in container.decode(stream)]  # each (channels, n) or (1, n*ch)
        rate = stream.rate
        channels = stream.channels
    if not chunks:
        raise ValueError("no decodable audio frames")
    data = np.concatenate([c.reshape(channels, -1) if c.shape[0] == 1 else c for c in chunks], axis=1)
    if data.dtype.kind == "i":
        data = data / float(np.iinfo(data.dtype).max)
    return data.T.astype(np.float32), rate  # (frames, channels)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling (anti-aliased) of mono float32 samples."""
    if rate == target:
        return samples.astype(np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(rate, target)
    return resample_poly(samples, target // g, rate // g).astype(np.float32)


# Video -----------------------------------------------------------------------------------------
def load_video(
    item: Any, *, num_frames: int, max_pixels: int = DEFAULT_MAX_PIXELS, max_frames_decoded: int = 10_000
) -> list[Image.Image]:
    """`num_frames` RGB frames sampled uniformly over a video (path, bytes or data URL), in order."""
    if isinstance(item, list) and all(isinstance(f, Image.Image) for f in item):
        frames = item
        if not frames:
            raise MediaError("video is an empty list of frames")
        return [frames[i] for i in uniform_indices(len(frames), num_frames)]
    source = read_bytes(item, "video")
    name = _describe(item)
    try:
        import av

        wanted = uniform_indices(_count_frames(source, max_frames_decoded), num_frames)  # none: no frames (below)
        frames: dict[int, Image.Image] = {}
        with av.open(io.BytesIO(source) if isinstance(source, bytes) else source) as container:
            stream = container.streams.video[0]
            if stream.codec_context.width * stream.codec_context.height > max_pixels:
                raise MediaError(f"video {name} frames exceed the limit of {max_pixels} pixels")
            for index, frame in enumerate(container.decode(stream)):
                if index in set(wanted):
                    frames[index] = frame.to_image().convert("RGB")
                if index >= wanted[-1]:
                    break
    except MediaError:
        raise
    except Exception as err:  # PyAV raises many types (InvalidDataError, IndexError on no stream, …)
        raise MediaError(f"video {name} is not a readable video: {err}") from None
    if not frames:
        raise MediaError(f"video {name} has no decodable frames")
    return [frames[i] for i in wanted if i in frames]


def _count_frames(source: bytes | str, limit: int) -> int:
    import av

    with av.open(io.BytesIO(source) if isinstance(source, bytes) else source) as container:
        if not container.streams.video:
            raise MediaError("the file has no video stream")
        count = 0
        for _ in container.decode(video=0):
            count += 1
            if count > limit:
                raise MediaError(f"video has more than {limit} frames; cut it shorter")
    return count


def uniform_indices(total: int, count: int) -> list[int]:
    """`count` indices spread evenly over `total` items (centres of equal segments; repeats if too few)."""
    return [min(total - 1, int((i + 0.5) * total / count)) for i in range(count)]
