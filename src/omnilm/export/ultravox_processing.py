"""UltravoxProcessor for `omnilm export --to hf-ultravox` directories: this file is copied into the export and
loaded by `AutoProcessor.from_pretrained(dir, trust_remote_code=True)` (vLLM's Ultravox loader asks for it).

Self-contained (transformers, numpy, torch only). It computes Whisper log-mel features exactly as omnilm's
processor does: each clip padded with silence to whole audio tokens (2·k mel frames), the mel frames of the
padded clip only; and it expands each `<|audio|>` in the text to the clip's token count.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin

HOP_LENGTH = 160  # Whisper's mel hop at 16 kHz
ENCODER_STRIDE = 2  # conv2 halves the mel frame rate
SAMPLING_RATE = 16_000


class UltravoxProcessor(ProcessorMixin):
    """text with `<|audio|>` markers + audios → input_ids, audio_values (N, n_mels, F_max), audio_lens (N,) mel
    frames, audio_token_len (N,) tokens, audio_num_chunks (one 30 s chunk per clip)."""

    attributes = ["audio_processor", "tokenizer"]  # noqa: RUF012 (transformers < 5 reads it; 5 reads __init__)
    audio_processor_class = "AutoFeatureExtractor"
    tokenizer_class = "AutoTokenizer"

    def __init__(self, audio_processor=None, tokenizer=None, audio_placeholder: str = "<|audio|>",
                 stack_factor: int = 8, chat_template: str | None = None, **kwargs):
        self.audio_placeholder = audio_placeholder
        self.audio_token_replacement = audio_placeholder  # vLLM sets its own; the default keeps the marker
        self.stack_factor = stack_factor
        super().__init__(audio_processor, tokenizer, chat_template=chat_template)

    def features(self, clip: np.ndarray) -> np.ndarray:
        """One mono 16 kHz clip → log-mel (n_mels, F), F a multiple of 2·stack_factor."""
        per_token = HOP_LENGTH * ENCODER_STRIDE * self.stack_factor
        limit = self.audio_processor.n_samples  # Whisper's 30 s window
        if clip.size > limit:
            raise ValueError(f"an audio clip of {clip.size / SAMPLING_RATE:.1f} s is longer than Whisper's 30 s")
        padded = np.pad(clip.astype(np.float32), (0, -clip.size % per_token))
        mel = self.audio_processor(padded, sampling_rate=SAMPLING_RATE, padding="longest",
                                   return_tensors="np").input_features[0]
        return mel[:, : padded.size // HOP_LENGTH]

    def __call__(self, text=None, audios=None, audio=None, sampling_rate: int = SAMPLING_RATE,
                 include_audio_num_chunks: bool = False, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        clips = audios if audios is not None else audio
        clips = [] if clips is None else ([clips] if isinstance(clips, np.ndarray) and clips.ndim == 1 else clips)
        if clips and sampling_rate != SAMPLING_RATE:
            raise ValueError(f"audio must be sampled at {SAMPLING_RATE} Hz, got {sampling_rate}")
        texts = [text] if isinstance(text, str) else list(text or [])
        mels = [self.features(np.asarray(c)) for c in clips]
        counts = [m.shape[1] // (ENCODER_STRIDE * self.stack_factor) for m in mels]
        remaining = iter(counts)
        expanded = []
        for piece in texts:
            parts = piece.split(self.audio_placeholder)
            expanded.append(parts[0] + "".join(self.audio_token_replacement * next(remaining) + p for p in parts[1:]))
        if texts and sum(t.count(self.audio_placeholder) for t in texts) != len(clips):
            raise ValueError(f"the text has {sum(t.count(self.audio_placeholder) for t in texts)} "
                             f"{self.audio_placeholder} markers for {len(clips)} audio clips")
        kwargs.pop("add_special_tokens", None)
        data = dict(self.tokenizer(expanded, add_special_tokens=False, **kwargs)) if texts else {}
        if mels:
            values = np.zeros((len(mels), mels[0].shape[0], max(m.shape[1] for m in mels)), np.float32)
            for i, mel in enumerate(mels):
                values[i, :, : mel.shape[1]] = mel
            data.update(audio_values=torch.from_numpy(values), audio_lens=torch.tensor([m.shape[1] for m in mels]),
                        audio_token_len=torch.tensor(counts))
            if include_audio_num_chunks:
                data["audio_num_chunks"] = torch.ones(len(mels), dtype=torch.long)
        return BatchFeature(data, tensor_type=return_tensors)
