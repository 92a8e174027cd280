"""Encoders turn media into feature sequences (N, T, C) and know how many tokens they yield."""

from omnilm.encoders.audio import AudioEncoder, WhisperTranscriber, audio_token_count, samples_per_token
from omnilm.encoders.video import VideoEncoder
from omnilm.encoders.vision import VisionEncoder, load_vision_tower

__all__ = [
    "AudioEncoder",
    "VideoEncoder",
    "VisionEncoder",
    "WhisperTranscriber",
    "audio_token_count",
    "load_vision_tower",
    "samples_per_token",
]
