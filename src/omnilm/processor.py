"""OmniProcessor: messages → model inputs. The only code that knows the token layout.

It renders the chat template, loads media (in audio.mode=transcribe, Whisper's transcript replaces each
clip), expands each placeholder into as many placeholder ids as the item's features, and builds
assistant-only labels for training.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omnilm.chat import Conversation, normalize_conversation
from omnilm.config import OmniConfig
from omnilm.encoders.audio import WhisperTranscriber, audio_token_count, load_transcriber, samples_per_token
from omnilm.errors import ContextLengthError, MediaError
from omnilm.layout import MediaLayout, compute_layout
from omnilm.media import DEFAULT_MAX_PIXELS, load_audio, load_image, load_video
from omnilm.pixels import to_pixels
from omnilm.sources import resolve_source

logger = logging.getLogger(__name__)

PROCESSOR_FILE = "omni_processor.json"
IGNORE_INDEX = -100  # label of tokens that carry no loss
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


class OmniProcessor:
    """Turns conversations into `input_ids`, `attention_mask`, media tensors and (optionally) `labels`."""

    def __init__(
        self, tokenizer, layout: MediaLayout, *, audio_feature_extractor=None,
        transcriber: WhisperTranscriber | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.layout = layout
        self.audio_feature_extractor = audio_feature_extractor
        self.transcriber = transcriber  # audio.mode=transcribe: Whisper ASR, run while loading the media
        self.max_pixels = DEFAULT_MAX_PIXELS
        if not tokenizer.is_fast:
            raise ValueError("omnilm needs a fast (Rust) tokenizer to align labels; this one is a slow tokenizer")
        missing = [p for p in layout.placeholders.values() if p not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
        if tokenizer.chat_template is None:
            logger.warning("the tokenizer has no chat template; using omnilm's plain 'Role: text' template")
            tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.placeholder_ids = {m: tokenizer.convert_tokens_to_ids(p) for m, p in layout.placeholders.items()}
        self._placeholder_pattern = re.compile("|".join(re.escape(p) for p in layout.placeholders.values()) or "$^")

    # Construction and files ---------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: OmniConfig, base_dir: str | Path | None = None) -> OmniProcessor:
        """Tokenizer of the LLM, Whisper's feature extractor (and transcriber) and the layout derived from `cfg`."""
        import transformers

        tokenizer = transformers.AutoTokenizer.from_pretrained(
            resolve_source(cfg.llm.source, base_dir), trust_remote_code=cfg.llm.trust_remote_code
        )
        extractor = None
        if cfg.audio is not None:
            extractor = transformers.WhisperFeatureExtractor.from_pretrained(resolve_source(cfg.audio.source, base_dir))
        return cls(tokenizer, compute_layout(cfg, base_dir), audio_feature_extractor=extractor,
                   transcriber=_transcriber(cfg, base_dir))

    @classmethod
    def from_pretrained(cls, directory: str | Path, config: OmniConfig | None = None) -> OmniProcessor:
        """The processor saved in `directory`; `config` (the checkpoint's) names the transcriber's Whisper."""
        import transformers

        directory = Path(directory)
        layout = MediaLayout.from_dict(json.loads((directory / PROCESSOR_FILE).read_text()))
        tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
        extractor = None
        if (directory / "preprocessor_config.json").is_file():
            extractor = transformers.WhisperFeatureExtractor.from_pretrained(directory)
        transcriber = _transcriber(config, directory) if config is not None else None
        return cls(tokenizer, layout, audio_feature_extractor=extractor, transcriber=transcriber)

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        if self.audio_feature_extractor is not None:
            self.audio_feature_extractor.save_pretrained(directory)
        (directory / PROCESSOR_FILE).write_text(json.dumps(self.layout.to_dict(), indent=2))

    # Main entry ---------------------------------------------------------------------------------
    def __call__(
        self,
        conversations: Any,
        *,
        images: list | None = None,
        audios: list | None = None,
        videos: list | None = None,
        add_generation_prompt: bool = True,
        return_labels: bool = False,
        padding_side: str = "left",
    ) -> dict[str, torch.Tensor]:
        """Encode one conversation (a list of messages or a prompt string) or a batch of them."""
        batch = conversations if _is_batch(conversations) else [conversations]
        if len(batch) > 1 and (images or audios or videos):
            raise ValueError("pass media inside each conversation's content when encoding a batch")
        convs = [
            normalize_conversation(c, self.layout.placeholders, images=images, audios=audios, videos=videos)
            for c in batch
        ]
        if self.layout.audio_mode == "transcribe":
            convs = self._transcribe(convs)
        media: dict[str, list] = {"image": [], "audio": [], "video": []}
        rows = []
        for conv in convs:
            ids, labels = self._encode(conv, media, add_generation_prompt, return_labels)
            rows.append((ids, labels))
        out = self._pad(rows, padding_side, return_labels)
        out.update(self._media_tensors(media))
        return out

    def decode(self, ids, **kwargs) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, **kwargs)

    # Steps --------------------------------------------------------------------------------------
    def _encode(self, conv: Conversation, media: dict, add_generation_prompt: bool, return_labels: bool):
        counts = []  # token count of each media item, in order of appearance
        for modality, item in conv.media:
            tensor, count = self._load(modality, item)
            media[modality].append(tensor)
            counts.append(count)
        spans = self._render(conv, add_generation_prompt, return_labels)  # [(text, trainable)]
        expanded, trainable = self._expand(spans, counts)
        enc = self.tokenizer(expanded, add_special_tokens=False, return_offsets_mapping=return_labels)
        ids = enc["input_ids"]
        limit = self.layout.max_length
        if limit is not None and len(ids) > limit:
            raise ContextLengthError(
                f"the prompt is {len(ids)} tokens, longer than the LLM's context of {limit}; "
                "shorten the text, send fewer media items or pool image tokens (vision.pooling)"
            )
        labels = None
        if return_labels:
            media_ids = set(self.placeholder_ids.values())
            labels = [
                tok if _inside(start, trainable) and tok not in media_ids else IGNORE_INDEX
                for tok, (start, _) in zip(ids, enc["offset_mapping"])
            ]
            if all(label == IGNORE_INDEX for label in labels):
                raise ValueError("the conversation has no assistant turn to learn from")
        return ids, labels

    def _render(self, conv: Conversation, add_generation_prompt: bool, mark_assistant: bool) -> list[tuple[str, bool]]:
        """The templated text, cut into spans flagged True where an assistant turn's tokens are."""
        msgs = conv.messages
        if self.layout.system_prompt is not None and msgs[0]["role"] != "system":
            msgs = [{"role": "system", "content": self.layout.system_prompt}, *msgs]
        def render(messages: list[dict], add_prompt: bool) -> str:
            return self._apply_template(messages, add_prompt, tools=conv.tools)

        full = render(msgs, add_generation_prompt and msgs[-1]["role"] != "assistant")
        if not mark_assistant:
            return [(full, False)]
        spans, pos = [], 0
        for i, message in enumerate(msgs):
            if message["role"] != "assistant":
                continue
            start = len(os.path.commonprefix([render(msgs[:i], True), full]))
            end = len(os.path.commonprefix([render(msgs[: i + 1], False), full]))
            spans += [(full[pos:start], False), (full[start:end], True)]
            pos = end
        spans.append((full[pos:], False))
        return [s for s in spans if s[0]]

    def _apply_template(self, messages: list[dict], add_generation_prompt: bool, tools: list | None = None) -> str:
        if not messages:
            return ""
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                                  tools=tools)

    def _expand(self, spans: list[tuple[str, bool]], counts: list[int]) -> tuple[str, list[tuple[int, int]]]:
        """Replace the k-th placeholder by counts[k] copies; return the text and trainable char ranges."""
        remaining = iter(counts)
        pieces, trainable, length = [], [], 0
        for text, is_trainable in spans:
            text = self._placeholder_pattern.sub(lambda m: m.group(0) * next(remaining), text)
            if is_trainable:
                trainable.append((length, length + len(text)))
            pieces.append(text)
            length += len(text)
        return "".join(pieces), trainable

    def _load(self, modality: str, item: Any) -> tuple[Any, int]:
        layout = self.layout
        if modality == "image":
            if layout.image_tokens is None:
                raise MediaError("this model has no image encoder; it cannot take images")
            return self._pixels(load_image(item, max_pixels=self.max_pixels)), layout.image_tokens
        if modality == "video":
            if layout.video_tokens is None:
                raise MediaError("this model has no video support; it cannot take videos")
            frames = load_video(item, num_frames=layout.video_frames, max_pixels=self.max_pixels)
            if len(frames) < layout.video_frames:  # very short clips: repeat the last frame
                frames += [frames[-1]] * (layout.video_frames - len(frames))
            return torch.stack([self._pixels(f) for f in frames]), layout.video_tokens
        if layout.audio_stack is None:
            raise MediaError("this model has no audio encoder; it cannot take audio")
        samples = load_audio(item, max_seconds=layout.audio_max_seconds)
        return samples, layout.audio_tokens(samples.size)

    def _transcribe(self, convs: list[Conversation]) -> list[Conversation]:
        """Replace each audio item by its Whisper transcript, one Whisper batch for every clip of the batch."""
        clips = [load_audio(item, max_seconds=self.layout.audio_max_seconds)
                 for conv in convs for m, item in conv.media if m == "audio"]
        if not clips:
            return convs
        if self.transcriber is None:
            raise MediaError("audio.mode is 'transcribe' but this processor has no Whisper transcriber; load the "
                             "model with omnilm.load (or OmniProcessor.from_pretrained(dir, config))")
        texts = iter(self.transcriber.transcribe(clips))
        marker = self.layout.placeholders["audio"]
        out = []
        for conv in convs:
            messages = []
            for message in conv.messages:  # clips are in order of appearance, as the markers are
                parts = message["content"].split(marker)
                content = parts[0] + "".join(next(texts) + rest for rest in parts[1:])
                messages.append({"role": message["role"], "content": content})
            out.append(Conversation(messages, [(m, item) for m, item in conv.media if m != "audio"]))
        return out

    def _pixels(self, image) -> torch.Tensor:
        layout = self.layout
        return to_pixels(image, side=layout.image_size, mean=layout.image_mean, std=layout.image_std)  # (3, S, S)

    def audio_features(self, clips: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel features (N, n_mels, F_max), each clip padded to whole tokens, and each clip's encoder
        token count (N,)."""
        stack = self.layout.audio_stack
        feats = []
        for clip in clips:
            padded = np.pad(clip, (0, -clip.size % samples_per_token(stack)))  # zeros: Whisper pads with silence
            mel = self.audio_feature_extractor(
                padded, sampling_rate=16_000, padding="longest", return_tensors="np"
            ).input_features[0]  # (n_mels, padded / 160)
            feats.append(torch.from_numpy(mel[:, : padded.size // 160]))
        batch = torch.zeros(len(feats), feats[0].shape[0], max(f.shape[1] for f in feats))
        for i, f in enumerate(feats):
            batch[i, :, : f.shape[1]] = f
        return batch, torch.tensor([audio_token_count(clip.size, stack) for clip in clips])

    def _media_tensors(self, media: dict[str, list]) -> dict[str, torch.Tensor]:
        out = {}
        if media["image"]:
            out["pixel_values"] = torch.stack(media["image"])  # (N_img, 3, S, S)
        if media["video"]:
            out["video_pixel_values"] = torch.stack(media["video"])  # (N_vid, F, 3, S, S)
        if media["audio"]:
            out["audio_features"], out["audio_tokens"] = self.audio_features(media["audio"])
        return out

    def _pad(self, rows, side: str, with_labels: bool) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids, _ in rows)
        pad_id = self.tokenizer.pad_token_id
        ids_out = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for i, (ids, lab) in enumerate(rows):
            cols = slice(width - len(ids), width) if side == "left" else slice(0, len(ids))
            ids_out[i, cols] = torch.tensor(ids)
            mask[i, cols] = 1
            if with_labels:
                labels[i, cols] = torch.tensor(lab)
        out = {"input_ids": ids_out, "attention_mask": mask}
        if with_labels:
            out["labels"] = labels
        return out


def _transcriber(cfg: OmniConfig, base_dir: str | Path | None) -> WhisperTranscriber | None:
    if cfg.audio is None or cfg.audio.mode != "transcribe":
        return None
    return load_transcriber(cfg.audio, resolve_source(cfg.audio.source, base_dir))


def _is_batch(conversations: Any) -> bool:
    """A list of conversations, as opposed to one conversation (a list of message dicts) or a prompt."""
    return isinstance(conversations, list) and bool(conversations) and isinstance(conversations[0], (list, str, Conversation))


def _inside(pos: int, ranges: list[tuple[int, int]]) -> bool:
    return any(lo <= pos < hi for lo, hi in ranges)

