"""Audio encoder: the Whisper encoder at the clip's own length, with frame stacking.

Whisper's own forward insists on 30 s (3000 mel frames); here the same modules run on the clip's real
length, so a 2 s question costs 2 s of compute. The processor pads samples to a multiple of
`samples_per_token`, so token counts are exact and known before the model runs: the processor counts
them (`audio_tokens`) and the model takes its count.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from omnilm.media import WHISPER_SAMPLING_RATE

LEAD_SILENCE_SECONDS = 0.5
TRANSCRIPT_TOKENS_PER_SECOND = 10  # fast speech is ~3 words/s: a longer transcript is a repetition loop
HOP_LENGTH = 160  # Whisper mel hop: 100 frames per second at 16 kHz
CONV_STRIDE = 2  # conv2 halves the frame rate: 50 encoder frames per second


def mel_frames_per_token(stack_factor: int) -> int:
    """Mel frames behind one audio token: conv2 halves the rate, then k frames are stacked."""
    return CONV_STRIDE * stack_factor


def samples_per_token(stack_factor: int) -> int:
    return HOP_LENGTH * mel_frames_per_token(stack_factor)


def audio_token_count(num_samples: int, stack_factor: int) -> int:
    """Tokens the encoder yields for `num_samples` samples at 16 kHz (after padding to a whole token)."""
    return max(1, -(-num_samples // samples_per_token(stack_factor)))


class AudioEncoder(nn.Module):
    """input_features (N, n_mels, F) → features (N, F / (2k), k·C), F a multiple of 2k."""

    def __init__(self, whisper_encoder: nn.Module, *, stack_factor: int) -> None:
        super().__init__()
        self.encoder = whisper_encoder
        self.stack_factor = stack_factor
        self.hidden_size = whisper_encoder.config.d_model
        self.max_positions = whisper_encoder.config.max_source_positions

    @property
    def out_dim(self) -> int:
        return self.hidden_size * self.stack_factor

    def encode_clips(self, features: torch.Tensor, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Clips padded to the longest, input_features (N, n_mels, F_max), and each clip's token count (N,)
        (the processor's) → one (T_i, kC) tensor per clip, each encoded at its own length."""
        frames_per_token = mel_frames_per_token(self.stack_factor)
        return [self(features[i : i + 1, :, : count * frames_per_token])[0] for i, count in enumerate(tokens.tolist())]

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        x = F.gelu(enc.conv1(input_features))  # (N, C, F)
        x = F.gelu(enc.conv2(x)).transpose(1, 2)  # (N, F/2, C)
        length = x.shape[1]
        if length > self.max_positions:
            raise ValueError(f"audio of {length} encoder frames exceeds Whisper's {self.max_positions} (30 s)")
        x = x + enc.embed_positions.weight[:length]  # absolute positions of the clip's own frames
        x = F.dropout(x, p=enc.dropout, training=self.training)
        for layer in enc.layers:
            x = layer(x, None)
        x = enc.layer_norm(x)  # (N, F/2, C)
        n, t, c = x.shape
        k = self.stack_factor
        return x.reshape(n, t // k, k * c)  # stack k consecutive frames into one token: (N, F/2k, kC)


class WhisperTranscriber(nn.Module):
    """Whisper ASR for `audio.mode: transcribe`: the cascade that feeds the transcript to the LLM as text."""

    def __init__(
        self, whisper: nn.Module, feature_extractor, tokenizer, *, prompt: str | None = None, num_beams: int = 1
    ) -> None:
        super().__init__()
        self.whisper = whisper
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.prompt = prompt or None
        self.num_beams = num_beams

    @torch.no_grad()
    def transcribe(self, clips: list, *, language: str | None = "en") -> list[str]:
        """Transcripts of mono 16 kHz float clips (each at most 30 s)."""
        if not clips:
            return []
        window = self.feature_extractor.n_samples  # Whisper's 30 s
        seconds = max(len(clip) for clip in clips) / WHISPER_SAMPLING_RATE
        clips = [_lead_with_silence(np.asarray(clip, dtype=np.float32), window) for clip in clips]
        features = self.feature_extractor(clips, sampling_rate=WHISPER_SAMPLING_RATE, return_tensors="pt")
        features = features.input_features.to(self.whisper.device, self.whisper.dtype)  # (N, n_mels, 3000)
        options: dict = {"language": language, "task": "transcribe", "num_beams": self.num_beams}
        room = self.whisper.config.max_target_positions // 2  # without a prompt: half of Whisper's token limit
        if self.prompt is not None:  # previous-text context: biases decoding towards the prompt's words
            prompt_ids = self.tokenizer.get_prompt_ids(self.prompt)
            options["prompt_ids"] = torch.tensor(prompt_ids, device=self.whisper.device)
            room = self.whisper.config.max_target_positions - len(prompt_ids) - 4  # less the prompt, start tokens
        # a hallucinated loop ("れ れ れ …") would run a whole batch to Whisper's limit: 448 tokens × beams
        options["max_new_tokens"] = max(1, min(room, math.ceil(seconds * TRANSCRIPT_TOKENS_PER_SECOND) + 8))
        ids = self.whisper.generate(features, **options)  # the returned ids leave the prompt out
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]


ENCODER_PREFIX = "model.encoder."  # Whisper's key names for its encoder; a saved embed-mode model keeps only these


def load_whisper_encoder(source: str, dtype: torch.dtype) -> nn.Module:
    """Whisper's encoder from `source` (a local dir or hub id): a whole Whisper's, or the encoder alone that a model
    hearing natively saves (`model.encoder.*` keys only), loaded without building a decoder it does not have."""
    import transformers
    from safetensors import safe_open
    from safetensors.torch import load_file

    weights = Path(source) / transformers.utils.SAFE_WEIGHTS_NAME
    if weights.is_file():
        with safe_open(str(weights), "pt") as handle:
            encoder_only = all(key.startswith(ENCODER_PREFIX) for key in handle.keys())
        if encoder_only:
            config = transformers.WhisperConfig.from_pretrained(source)
            encoder = transformers.models.whisper.modeling_whisper.WhisperEncoder(config)
            state = {key.removeprefix(ENCODER_PREFIX): value for key, value in load_file(str(weights)).items()}
            encoder.load_state_dict(state, strict=True)
            return encoder.to(dtype).eval()
    whisper = transformers.WhisperForConditionalGeneration.from_pretrained(source, dtype=dtype)
    return whisper.model.encoder


def load_whisper(source: str, dtype: str) -> tuple:
    """Whisper for speech recognition from `source` (a local dir or hub id): the model (eval, frozen), its feature
    extractor and its tokenizer."""
    import transformers

    from omnilm.config import torch_dtype

    whisper = transformers.WhisperForConditionalGeneration.from_pretrained(source, dtype=torch_dtype(dtype))
    return (whisper.eval().requires_grad_(False), transformers.WhisperFeatureExtractor.from_pretrained(source),
            transformers.AutoTokenizer.from_pretrained(source))


def load_transcriber(config, source: str) -> WhisperTranscriber:
    """The Whisper ASR of an `AudioConfig` in transcribe mode, loaded from `source` (a local dir or hub id)."""
    return WhisperTranscriber(*load_whisper(source, config.dtype), prompt=config.transcribe_prompt,
                              num_beams=config.transcribe_beams).requires_grad_(False)


def _lead_with_silence(clip: np.ndarray, window: int) -> np.ndarray:
    """Prepend LEAD_SILENCE_SECONDS of silence (within the `window` of samples): Whisper tends to drop the first
    words of a clip whose speech starts at its very first sample."""
    room = max(0, window - clip.size)
    return np.concatenate([np.zeros(min(room, int(LEAD_SILENCE_SECONDS * WHISPER_SAMPLING_RATE)), np.float32), clip])
