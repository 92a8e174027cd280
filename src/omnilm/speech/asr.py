"""Speech recognition for the audio endpoints: Whisper over 30 s windows, with segment timestamps.

Long audio is cut into windows of at most 30 s (Whisper's input) at the quietest moment near each window's
end, so no word is cut in two; each window starts just before its first sound, since Whisper dates its first
segment at 0 whatever silence precedes it. Whisper's timestamp tokens are relative to a window, so each
segment is shifted by its window's start: times stay right across windows.

Scores are OpenAI Whisper's: a window's `avg_logprob` is the mean log-probability of its decoded tokens (end of
text included) under Whisper's filtered distribution (suppressions and timestamp rules applied, no temperature);
its `no_speech_prob` is the probability of `<|nospeech|>` right after `<|startoftranscript|>`. Word times come
from transformers' cross-attention alignment (`return_token_timestamps`, DTW over the model's `alignment_heads`).
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
UNSPACED_LANGUAGES = {"zh", "ja", "th", "lo", "my", "yue"}  # no spaces between words: each character is one


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
    avg_logprob: float | None = None  # its window's mean token log-probability
    no_speech_prob: float | None = None  # its window's probability of <|nospeech|> (None: the tokenizer has none)

    def as_dict(self) -> dict:
        return {"id": self.id, "seek": self.seek, "start": round(self.start, 2), "end": round(self.end, 2),
                "text": self.text, "tokens": self.tokens, "temperature": self.temperature,
                "avg_logprob": self.avg_logprob, "compression_ratio": self.compression_ratio,
                "no_speech_prob": self.no_speech_prob}


@dataclass
class Word:
    """One timed word, in OpenAI's verbose_json shape (no surrounding spaces)."""

    word: str
    start: float
    end: float

    def as_dict(self) -> dict:
        return {"word": self.word, "start": round(self.start, 2), "end": round(self.end, 2)}


@dataclass
class Transcript:
    text: str
    language: str  # Whisper's code ("en"); `language_name` gives OpenAI's "english"
    duration: float
    task: str = "transcribe"
    segments: list[Segment] = field(default_factory=list)
    words: list[Word] | None = None  # only when asked for (`word_timestamps=True`)

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
        self.can_time_words = bool(getattr(config, "alignment_heads", None))  # the heads DTW aligns tokens with
        self.no_speech_id = _token_id(tokenizer, "<|nospeech|>", "<|nocaptions|>")  # older vocabularies: nocaptions

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
                   temperature: float = 0.0, task: str = "transcribe", word_timestamps: bool = False) -> Transcript:
        """A transcript of mono 16 kHz samples (N,) of any length; `task="translate"` gives English text;
        `word_timestamps` also times every word (`Transcript.words`)."""
        if task == "translate" and not self.can_translate:
            raise OmniError(f"{self.name} cannot translate (an English-only Whisper); use transcriptions")
        if word_timestamps and not self.can_time_words:
            raise OmniError(f"{self.name} has no alignment heads (generation_config.alignment_heads), so it cannot "
                            "time words; ask for segment timestamps")
        duration = samples.size / WHISPER_SAMPLING_RATE
        words = [] if word_timestamps else None
        windows = speech_windows(samples)
        if not windows:
            return Transcript("", self.check_language(language) or "en", duration, task, words=words)
        language = self.check_language(language) or self._detect(windows[0][1])
        segments: list[Segment] = []
        for first in range(0, len(windows), BATCH_SIZE):
            batch = windows[first : first + BATCH_SIZE]
            decoded = self.decode([clip for _, clip in batch], language=language, prompt=prompt,
                                  temperature=temperature, task=task, word_timestamps=word_timestamps)
            for (start, clip), window in zip(batch, decoded, strict=True):
                offset, length = start / WHISPER_SAMPLING_RATE, clip.size / WHISPER_SAMPLING_RATE
                for begin, end, positions in self._timed(window.tokens, length):
                    tokens = [window.tokens[i] for i in positions]
                    text = self._text(tokens)
                    if not text.strip():
                        continue
                    segments.append(Segment(
                        id=len(segments), start=offset + begin, end=offset + end, text=text, tokens=tokens,
                        seek=round(offset * 100), temperature=temperature, compression_ratio=_compression(text),
                        avg_logprob=window.avg_logprob, no_speech_prob=window.no_speech_prob))
                    if words is not None:
                        words += self._words(window, positions, offset, length, language not in UNSPACED_LANGUAGES)
        text = "".join(s.text for s in segments).strip()
        return Transcript(text, language, duration, task, segments, words)

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

    def _text(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    @torch.no_grad()
    def decode(self, clips: list[np.ndarray], *, language: str | None, prompt: str | None = None,
               temperature: float = 0.0, task: str = "transcribe", word_timestamps: bool = False) -> list[Decoded]:
        """Clips of at most 30 s, each decoded once (one window), with its scores and, for `word_timestamps`, the
        times of its tokens."""
        features, mask = self._features(clips)
        encoded = self.whisper.get_encoder()(features)  # (B, 1500, D), for generate and the no-speech forward
        config = self.whisper.generation_config
        limit = self.whisper.config.max_target_positions
        sums = LogprobSums(config.eos_token_id, len(clips))
        options: dict = {"return_timestamps": True, "task": task, "num_beams": self.num_beams,
                         "force_unique_generate_call": True, "logits_processor": [sums],
                         "return_token_timestamps": word_timestamps}
        if self.languages:
            options["language"] = language
        if temperature > 0:
            options.update(do_sample=True, temperature=temperature)
        room, prompt_ids = limit // 2, []
        if prompt:
            prompt_ids = self.tokenizer.get_prompt_ids(prompt)[-(limit // 2 - 1):].tolist()  # Whisper keeps half
            options["prompt_ids"] = torch.tensor(prompt_ids, device=self.whisper.device)
            room = limit - len(prompt_ids) - 4
        seconds = max(clip.size for clip in clips) / WHISPER_SAMPLING_RATE
        options["max_new_tokens"] = max(8, min(room, math.ceil(seconds * 12) + 16))  # timestamps are tokens too
        attention = self.whisper.config._attn_implementation
        try:
            out = self.whisper.generate(encoder_outputs=encoded, attention_mask=mask, **options)
        finally:  # token timestamps switch the model to eager attention for good; switch it back
            self.whisper.config._attn_implementation = attention
        rows = (out["sequences"] if word_timestamps else out).tolist()  # (B, prompt + generated)
        times = out["token_timestamps"].tolist() if word_timestamps else None  # (B, prompt + generated) seconds
        no_speech = self._no_speech(encoded, prompt_ids, len(clips))
        decoded, begin = [], sums.prompt_length
        for b, row in enumerate(rows):
            generated = row[begin:]
            end = generated.index(config.eos_token_id) + 1 if config.eos_token_id in generated else len(generated)
            mean = sums.total(b, tuple(row[: begin + end])) / end  # OpenAI's: the end of text counts
            edges = times[b][begin - 1 : begin + end] if times else None  # token k: edges[k] → edges[k + 1]
            decoded.append(Decoded(generated[:end], mean, no_speech[b], edges))
        return decoded

    def _no_speech(self, encoded, prompt_ids: list[int], batch: int) -> list[float | None]:
        """Per clip, OpenAI's no_speech_prob: p(<|nospeech|>) from the logits at <|startoftranscript|>, which
        follows the prompt if there is one."""
        if self.no_speech_id is None:
            return [None] * batch
        start = [*prompt_ids, self.whisper.generation_config.decoder_start_token_id]
        ids = torch.tensor([start], device=self.whisper.device).expand(batch, -1)  # (B, prompt + 1)
        logits = self.whisper(encoder_outputs=encoded, decoder_input_ids=ids, use_cache=False).logits[:, -1]  # (B, V)
        return logits.float().softmax(dim=-1)[:, self.no_speech_id].tolist()

    def _timed(self, ids: list[int], length: float):
        """(start, end, positions in `ids` of its text tokens) per segment between Whisper's timestamp tokens."""
        start, positions = 0.0, []
        for i, token in enumerate(ids):
            if token >= self.timestamp_begin:
                time = min((token - self.timestamp_begin) * TIME_PRECISION, length)
                if positions:
                    yield start, max(time, start), positions
                    positions = []
                start = time
            elif token < self.whisper.generation_config.eos_token_id:  # a text token, not a special one
                positions.append(i)
        if positions:  # a last segment without its closing timestamp runs to the window's end
            yield start, length, positions

    def _words(self, window: Decoded, positions: list[int], offset: float, length: float, spaced: bool) -> list[Word]:
        """The timed words of one segment (its text tokens at `positions` of the window): a piece that begins with
        a space begins a word (in unspaced scripts every piece is one); a word lasts from its first token's start
        to its last token's end."""
        groups: list[list] = []  # [text, first position, last position]
        at = 0
        for text, count in self._pieces([window.tokens[i] for i in positions]):
            first, last = positions[at], positions[at + count - 1]
            at += count
            if groups and spaced and not text.startswith(" "):
                groups[-1][0] += text
                groups[-1][2] = last
            else:
                groups.append([text, first, last])

        def clamp(time: float) -> float:  # seconds into the window → into the audio
            return offset + min(max(time, 0.0), length)

        return [Word(text.strip(), clamp(window.edges[first]), clamp(window.edges[last + 1]))
                for text, first, last in groups if text.strip()]

    def _pieces(self, tokens: list[int]) -> list[tuple[str, int]]:
        """`tokens` cut into the shortest runs that decode to whole characters: (text, number of tokens) each.
        A run whose broken character stays broken in the whole text ends there too (as OpenAI's whisper does)."""
        whole = self._text(tokens)
        pieces, run, at = [], [], 0
        for token in tokens:
            run.append(token)
            text = self._text(run)
            broken = text.find("\ufffd")
            if broken < 0 or whole[at + broken : at + broken + 1] in ("\ufffd", ""):
                pieces.append((text, len(run)))
                at, run = at + len(text), []
        if run:
            pieces.append((self._text(run), len(run)))
        return pieces


@dataclass
class Decoded:
    """One window's decoding: its generated tokens (timestamp tokens and the closing end of text included), their
    mean log-probability, the window's no-speech probability and, with word timestamps, `edges`
    (len(tokens) + 1,): token k is said from edges[k] to edges[k + 1] seconds into the window."""

    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float | None
    edges: list[float] | None = None


class LogprobSums:
    """Sums each hypothesis's token log-probabilities as Whisper decodes (OpenAI's `sum_logprobs`).

    A logits processor (transformers calls it as one) that leaves the scores as they are. Placed after Whisper's
    own processors, it sees the filtered scores (suppressions and timestamp rules applied, before any temperature)
    and renormalizes them. Sums follow each clip's prefixes, so a beam that is reordered or that finishes early
    keeps its own; only the last step's log-probabilities are held, unlike `output_scores`.
    """

    def __init__(self, eos_token_id: int, batch_size: int) -> None:
        self.eos, self.batch_size = eos_token_id, batch_size
        self.sums: dict[tuple[int, tuple[int, ...]], float] = {}  # (clip, prefix) → sum, for the last step's rows
        self.ended: dict[tuple[int, tuple[int, ...]], float] = {}  # the same for every prefix + end of text
        self.rows: dict[tuple[int, tuple[int, ...]], int] = {}  # (clip, prefix) → its row in `logprobs`
        self.logprobs: torch.Tensor | None = None  # (R, V) the last step's, R = clips × beams
        self.prompt_length = 0  # decoder input ids before the first generated token

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        logprobs = torch.log_softmax(scores.float(), dim=-1)  # (R, V), a clip's beams adjacent
        beams = input_ids.shape[0] // self.batch_size
        keys = [(i // beams, tuple(row)) for i, row in enumerate(input_ids.tolist())]
        if self.logprobs is None:
            self.prompt_length = input_ids.shape[1]
        sums = {key: self._extended(*key) if self.logprobs is not None else 0.0 for key in keys}
        for (clip, prefix), end in zip(keys, logprobs[:, self.eos].tolist(), strict=True):
            self.ended[clip, prefix + (self.eos,)] = sums[clip, prefix] + end  # the hypothesis, were it to end
        self.sums, self.rows, self.logprobs = sums, {key: i for i, key in enumerate(keys)}, logprobs
        return scores

    def total(self, clip: int, sequence: tuple[int, ...]) -> float:
        """The sum for a decoded `sequence` of `clip` (decoder input ids included): one that ended, or one cut at
        max_new_tokens (a child of the last step's rows)."""
        return self.ended[clip, sequence] if (clip, sequence) in self.ended else self._extended(clip, sequence)

    def _extended(self, clip: int, sequence: tuple[int, ...]) -> float:
        parent = (clip, sequence[:-1])  # one of the last step's rows
        return self.sums[parent] + float(self.logprobs[self.rows[parent], sequence[-1]])


def _token_id(tokenizer, *names: str) -> int | None:
    """The id of the first of `names` the tokenizer knows, else None."""
    for name in names:
        token = tokenizer.convert_tokens_to_ids(name)
        if isinstance(token, int) and token != tokenizer.unk_token_id:
            return token
    return None


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
