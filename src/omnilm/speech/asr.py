"""Speech recognition for the audio endpoints: Whisper over 30 s windows, with segment timestamps.

Long audio is cut into windows of at most 30 s (Whisper's input) at the quietest moment near each window's
end, so no word is cut in two; each window starts just before its first sound, since Whisper dates its first
segment at 0 whatever silence precedes it. Whisper's timestamp tokens are relative to a window, so each
segment is shifted by its window's start: times stay right across windows.
"""

from __future__ import annotations

import logging
import math
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch

from omnilm.errors import OmniError
from omnilm.media import WHISPER_SAMPLING_RATE

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 30.0  # Whisper's input
CUT_SEARCH_SECONDS = 5.0  # a window ends at the quietest 20 ms of its last 5 s
FRAME_SECONDS = 0.02
LEAD_SECONDS = 0.3  # silence kept before a window's first sound
TIME_PRECISION = 0.02  # seconds per Whisper timestamp token
BATCH_SIZE = 8  # windows decoded together


@dataclass
class Segment:
    """One timed stretch of a transcript, in OpenAI's verbose_json shape."""

    id: int
    start: float
    end: float
    text: str
    tokens: list[int]
    seek: int = 0  # the window's start in 10 ms mel frames (Whisper's own `seek`)
    temperature: float = 0.0
    compression_ratio: float = 0.0
    avg_logprob: float | None = None  # not computed here (Whisper's long-form scores are not kept)
    no_speech_prob: float | None = None  # not computed here

    def as_dict(self) -> dict:
        return {"id": self.id, "seek": self.seek, "start": round(self.start, 2), "end": round(self.end, 2),
                "text": self.text, "tokens": self.tokens, "temperature": self.temperature,
                "avg_logprob": self.avg_logprob, "compression_ratio": self.compression_ratio,
                "no_speech_prob": self.no_speech_prob}


@dataclass
class Transcript:
    text: str
    language: str  # Whisper's code ("en"); `language_name` gives OpenAI's "english"
    duration: float
    task: str = "transcribe"
    segments: list[Segment] = field(default_factory=list)

    @property
    def language_name(self) -> str:
        from transformers.models.whisper.tokenization_whisper import LANGUAGES

        return LANGUAGES.get(self.language, self.language)


class Recognizer:
    """Whisper (`WhisperForConditionalGeneration` with its feature extractor and tokenizer) as an ASR service."""

    def __init__(self, whisper, feature_extractor, tokenizer, *, name: str = "whisper", num_beams: int = 5) -> None:
        self.whisper, self.feature_extractor, self.tokenizer, self.name = whisper, feature_extractor, tokenizer, name
        self.num_beams = num_beams  # Whisper's own default (beam_size 5); 1 is greedy, ~2.5x faster on a CPU
        config = whisper.generation_config
        self.timestamp_begin = config.no_timestamps_token_id + 1  # <|0.00|>; later ids count 20 ms each
        self.languages = {token.strip("<|>"): i for token, i in (getattr(config, "lang_to_id", None) or {}).items()}
        self.can_translate = bool(getattr(config, "is_multilingual", False)) and "translate" in (
            getattr(config, "task_to_id", None) or {})

    @classmethod
    def load(cls, ref: str, *, dtype: str = "float32", num_beams: int = 5) -> Recognizer:
        """The Whisper at `ref` (a `pkg:` reference such as pkg:whisper-base, a directory or a hub id)."""
        from omnilm.encoders.audio import load_whisper
        from omnilm.sources import resolve_source

        return cls(*load_whisper(resolve_source(ref), dtype), name=ref, num_beams=num_beams)

    @classmethod
    def of_transcriber(cls, transcriber) -> Recognizer:
        """The model's own Whisper (`audio.mode: transcribe`), shared, not loaded twice."""
        return cls(transcriber.whisper, transcriber.feature_extractor, transcriber.tokenizer, name="model's whisper",
                   num_beams=transcriber.num_beams)

    def check_language(self, language: str | None) -> str | None:
        if language is None or not self.languages:
            return language
        code = language.lower()
        if code not in self.languages:
            from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

            code = TO_LANGUAGE_CODE.get(code, code)
        if code not in self.languages:
            raise OmniError(f"language {language!r} is not one Whisper knows; give an ISO-639-1 code such as 'en'")
        return code

    @torch.no_grad()
    def transcribe(self, samples: np.ndarray, *, language: str | None = None, prompt: str | None = None,
                   temperature: float = 0.0, task: str = "transcribe") -> Transcript:
        """A transcript of mono 16 kHz samples (N,) of any length; `task="translate"` gives English text."""
        if task == "translate" and not self.can_translate:
            raise OmniError(f"{self.name} cannot translate (an English-only Whisper); use transcriptions")
        duration = samples.size / WHISPER_SAMPLING_RATE
        windows = speech_windows(samples)
        if not windows:
            return Transcript("", self.check_language(language) or "en", duration, task)
        language = self.check_language(language) or self._detect(windows[0][1])
        segments: list[Segment] = []
        for first in range(0, len(windows), BATCH_SIZE):
            batch = windows[first : first + BATCH_SIZE]
            rows = self._decode([clip for _, clip in batch], language=language, prompt=prompt,
                                temperature=temperature, task=task)
            for (start, clip), ids in zip(batch, rows, strict=True):
                offset = start / WHISPER_SAMPLING_RATE
                for begin, end, tokens in self._timed(ids, clip.size / WHISPER_SAMPLING_RATE):
                    text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                    if not text.strip():
                        continue
                    segments.append(Segment(
                        id=len(segments), start=offset + begin, end=offset + end, text=text, tokens=tokens,
                        seek=round(offset * 100), temperature=temperature, compression_ratio=_compression(text)))
        text = "".join(s.text for s in segments).strip()
        return Transcript(text, language, duration, task, segments)

    def _detect(self, clip: np.ndarray) -> str:
        if not self.languages:
            return "en"
        features = self._features([clip])[0]
        token = int(self.whisper.detect_language(features)[0])
        return next((code for code, i in self.languages.items() if i == token), "en")

    def _features(self, clips: list[np.ndarray]):
        out = self.feature_extractor(clips, sampling_rate=WHISPER_SAMPLING_RATE, return_tensors="pt",
                                     return_attention_mask=True)
        device, dtype = self.whisper.device, self.whisper.dtype
        return out.input_features.to(device, dtype), out.attention_mask.to(device)  # (B, n_mels, 3000), (B, 3000)

    def _decode(self, clips, *, language, prompt, temperature, task) -> list[list[int]]:
        """Per clip, the generated token ids, timestamp tokens included."""
        features, mask = self._features(clips)
        limit = self.whisper.config.max_target_positions
        options: dict = {"return_timestamps": True, "task": task, "num_beams": self.num_beams}
        if self.languages:
            options["language"] = language
        if temperature > 0:
            options.update(do_sample=True, temperature=temperature)
        room = limit // 2
        if prompt:
            prompt_ids = self.tokenizer.get_prompt_ids(prompt)[-(limit // 2 - 1):]  # Whisper keeps the last half
            options["prompt_ids"] = torch.tensor(prompt_ids, device=self.whisper.device)
            room = limit - len(prompt_ids) - 4
        seconds = max(clip.size for clip in clips) / WHISPER_SAMPLING_RATE
        options["max_new_tokens"] = max(8, min(room, math.ceil(seconds * 12) + 16))  # timestamps are tokens too
        return self.whisper.generate(features, attention_mask=mask, **options).tolist()

    def _timed(self, ids: list[int], length: float):
        """(start, end, text tokens) per segment between Whisper's timestamp tokens."""
        start, tokens = 0.0, []
        for token in ids:
            if token >= self.timestamp_begin:
                time = min((token - self.timestamp_begin) * TIME_PRECISION, length)
                if tokens:
                    yield start, max(time, start), tokens
                    tokens = []
                start = time
            elif token < self.whisper.generation_config.eos_token_id:  # a text token, not a special one
                tokens.append(token)
        if tokens:  # a last segment without its closing timestamp runs to the window's end
            yield start, length, tokens


def speech_windows(samples: np.ndarray, rate: int = WHISPER_SAMPLING_RATE) -> list[tuple[int, np.ndarray]]:
    """Mono samples (N,) → (start sample, clip) windows of at most 30 s, each from just before its first sound
    to a quiet point; all silence → no windows."""
    frame = int(FRAME_SECONDS * rate)
    usable = samples.size // frame * frame
    energy = np.sqrt(np.mean(np.square(samples[:usable].reshape(-1, frame), dtype=np.float64), axis=1))  # (F,)
    if samples.size > usable:
        energy = np.append(energy, np.sqrt(np.mean(np.square(samples[usable:], dtype=np.float64))))
    if energy.size == 0 or energy.max() <= 1e-4:
        return []
    loud = energy > max(1e-4, 0.02 * energy.max())  # (F,) frames with sound
    window, search, lead = (int(s / FRAME_SECONDS) for s in (WINDOW_SECONDS, CUT_SEARCH_SECONDS, LEAD_SECONDS))
    windows, position = [], 0
    while position < energy.size:
        sounds = np.flatnonzero(loud[position:])
        if sounds.size == 0:
            break
        begin = max(position, position + int(sounds[0]) - lead)
        end = begin + window
        if end < energy.size:  # cut at the quietest frame of the window's last seconds
            end = end - search + int(np.argmin(energy[end - search : end])) + 1
        end = min(end, energy.size)
        windows.append((begin * frame, samples[begin * frame : end * frame]))
        position = end
    return windows


def _compression(text: str) -> float:
    """Whisper's repetition check: length over zlib-compressed length."""
    raw = text.encode("utf-8")
    return round(len(raw) / max(1, len(zlib.compress(raw))), 3)
