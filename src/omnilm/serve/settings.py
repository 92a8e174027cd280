"""Limits and switches of `omnilm serve`, one dataclass; every field is a command-line flag."""

from __future__ import annotations

import os
from dataclasses import dataclass

from omnilm.configkit import check_fields, require

API_KEY_ENV = "OMNILM_API_KEY"
POSITIVE = ("max_body_bytes", "max_image_pixels", "max_audio_seconds", "max_video_frames", "max_tokens",
            "default_max_tokens", "request_timeout", "max_batch_size", "max_queue", "remote_timeout")
BATCHING = ("continuous", "request")


@dataclass
class ServeSettings:
    api_key: str | None = None  # bearer key clients must send; None: no authentication
    allow_remote_media: bool = False  # fetch http(s) media URLs at all (off: data URLs only)
    allowed_hosts: tuple[str, ...] = ()  # host names remote media may come from (exact, case-insensitive)
    max_body_bytes: int = 32 * 2**20  # whole request body, base64 media included
    max_image_pixels: int = 16_000_000  # width × height of one image (a 4000×4000 photo)
    max_audio_seconds: float = 30.0  # one clip; Whisper-style encoders see 30 s windows
    max_video_frames: int = 3_000  # frames decoded from one video (~100 s at 30 fps) before sampling
    max_media_items: int = 8  # images + audio clips + videos in one request
    max_tokens: int = 1024  # upper bound on max_tokens / max_completion_tokens
    default_max_tokens: int = 256  # when a request names none
    request_timeout: float = 120.0  # seconds from arrival to the last token, queueing included
    max_batch_size: int = 16  # requests generated together in one batch
    batch_wait_ms: float = 10.0  # how long the scheduler waits for company before starting a batch
    max_queue: int = 256  # waiting requests beyond this are refused with 429
    remote_timeout: float = 10.0  # seconds to fetch one remote media URL
    model_id: str | None = None  # name shown by /v1/models (default: the model's name)
    media_cache_mb: float = 256.0  # encoder + connector outputs kept per image/clip hash (0: encode every time)
    batching: str = "continuous"  # continuous: a request joins the running batch at the next step; request: per batch

    def __post_init__(self) -> None:
        check_fields(self)
        for name in POSITIVE:
            require(getattr(self, name) > 0, name, f"must be positive, got {getattr(self, name)!r}")
        require(self.batching in BATCHING, "batching", f"must be one of {', '.join(BATCHING)}, got {self.batching!r}")
        for name in ("max_media_items", "batch_wait_ms", "media_cache_mb"):
            require(getattr(self, name) >= 0, name, f"must not be negative, got {getattr(self, name)!r}")
        self.default_max_tokens = min(self.default_max_tokens, self.max_tokens)
        self.allowed_hosts = tuple(h.strip().lower().rstrip(".") for h in self.allowed_hosts if h.strip())
        if self.api_key is None:
            self.api_key = os.environ.get(API_KEY_ENV) or None
        require(bool(self.allowed_hosts) or not self.allow_remote_media, "allow_remote_media",
                "needs an allow-list of hosts (--allowed-hosts example.org ...)")
