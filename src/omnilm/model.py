"""OmniModel: encoders + connectors + any causal LLM, merged at placeholder positions."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
from torch import nn

from omnilm.config import OmniConfig, torch_dtype
from omnilm.connectors import build_connector
from omnilm.encoders import AudioEncoder, VideoEncoder, VisionEncoder, load_vision_tower
from omnilm.encoders.audio import load_whisper_encoder
from omnilm.errors import PlaceholderMismatchError
from omnilm.fusion import GatedXAttnFusion, MediaContext
from omnilm.layout import MediaLayout
from omnilm.sources import resolve_source

logger = logging.getLogger(__name__)

HEAD_PREFIXES = ("connectors.", "video.", "fusion.")  # always trained, always saved
MEDIA_INPUTS = ("pixel_values", "audio_features", "audio_tokens", "video_pixel_values",  # from the processor
                "image_features", "audio_embeds", "video_frame_features")  # from the feature cache, in their place


class OmniModel(nn.Module):
    """input_ids (B, L) with N placeholder ids per media item + media tensors → LLM output.

    Parts: `llm` (AutoModelForCausalLM), `vision`, `audio` (encoders), `video` (frame-order embedding
    over the vision encoder), `connectors` (one per modality key), `fusion` (fusion.mode=gated_xattn:
    cross-attention blocks hooked into the LLM; one placeholder per item). In audio.mode=transcribe the
    processor turns speech into text, so the model has no audio part.
    """

    def __init__(
        self,
        config: OmniConfig,
        *,
        llm: nn.Module,
        placeholder_ids: dict[str, int],
        vision: VisionEncoder | None = None,
        audio: AudioEncoder | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.llm = llm
        self.vision = vision
        self.audio = audio
        self.placeholder_ids = dict(placeholder_ids)
        self.media_cache = None  # an omnilm.media_cache.MediaCache: inference encodes each item once
        llm_width = llm.get_input_embeddings().embedding_dim
        head = llm.get_output_embeddings()
        if head is not None:  # generation's prefill feeds it hidden[:, -1:], a strided view: see _contiguous_input
            head.register_forward_pre_hook(_contiguous_input)
        self.video = None
        if config.video is not None:
            self.video = VideoEncoder(num_frames=config.video.num_frames, temporal_pool=config.video.temporal_pool,
                                      dim=vision.out_dim, frame_order=config.video.frame_order,
                                      frame_delta=config.video.frame_delta)
        in_dims = {"image": vision and vision.out_dim, "video": vision and vision.out_dim, "audio": audio and audio.out_dim}
        self.connectors = nn.ModuleDict(
            {
                key: build_connector(
                    c.type, in_dim=in_dims[key], out_dim=llm_width, hidden_dim=c.hidden_dim, **c.options
                )
                for key, c in config.connectors.items()
            }
        )
        self.fusion = None
        if config.fusion.mode == "gated_xattn":
            f = config.fusion
            self.fusion = GatedXAttnFusion(
                llm, modalities=tuple(self.placeholder_ids), every=f.every, heads=f.heads, ff_mult=f.ff_mult
            )
        for part in (vision, audio):
            if part is not None:
                part.requires_grad_(False)  # encoders start frozen; a training stage may unfreeze them

    # Construction -------------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        config: OmniConfig,
        *,
        layout: MediaLayout | None = None,
        placeholder_ids: dict[str, int] | None = None,
        base_dir: str | Path | None = None,
        llm: nn.Module | None = None,
    ) -> OmniModel:
        """Load each base part from its source and build fresh connectors.

        `layout` and `placeholder_ids` come from the processor; without them one is built to read them.
        `llm` replaces the LLM named by config.llm (the llama.cpp engine passes a stand-in of its width).
        """
        import transformers

        if layout is None or placeholder_ids is None:
            from omnilm.processor import OmniProcessor

            processor = OmniProcessor.from_config(config, base_dir)
            layout, placeholder_ids = processor.layout, processor.placeholder_ids

        if llm is None:
            llm = transformers.AutoModelForCausalLM.from_pretrained(
                resolve_source(config.llm.source, base_dir),
                dtype=torch_dtype(config.llm.dtype),
                trust_remote_code=config.llm.trust_remote_code,
            )
        vision = audio = None
        if config.vision is not None:
            v = config.vision
            tower = load_vision_tower(
                resolve_source(v.source, base_dir), dtype=torch_dtype(v.dtype), trust_remote_code=v.trust_remote_code
            )
            vision = VisionEncoder(
                tower,
                feature_layer=v.feature_layer,
                drop_cls=v.drop_cls,
                pooling=v.pooling,
                pool_size=v.pool_size,
                image_size=layout.image_size,
            )
        if config.audio is not None and config.audio.mode == "embed":
            encoder = load_whisper_encoder(resolve_source(config.audio.source, base_dir), torch_dtype(config.audio.dtype))
            audio = AudioEncoder(encoder, stack_factor=config.audio.stack_factor)
        return cls(config, llm=llm, placeholder_ids=placeholder_ids, vision=vision, audio=audio)

    # Forward ------------------------------------------------------------------------------------
    def encode_media(self, **media: torch.Tensor | None) -> dict[str, list[torch.Tensor]]:
        """`_encode_media`, through `media_cache` when one is set and no gradients are wanted."""
        if self.media_cache is not None and not torch.is_grad_enabled():
            weights = [p for name, p in self.named_parameters() if not name.startswith("llm.")]
            return self.media_cache.encode(self._encode_media, media, weights=weights)
        return self._encode_media(**media)

    def _encode_media(
        self,
        pixel_values: torch.Tensor | None = None,
        audio_features: torch.Tensor | None = None,
        audio_tokens: torch.Tensor | None = None,
        video_pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        audio_embeds: torch.Tensor | None = None,
        video_frame_features: torch.Tensor | None = None,
    ) -> dict[str, list[torch.Tensor]]:
        """Media → LLM-width features: per modality, one (T_i, D) tensor per item, in placeholder order.

        `audio_tokens` (N_aud,) is each clip's encoder token count, as the processor counted it. Encoder
        outputs computed earlier (a feature cache of frozen encoders) may replace the raw media:
        `image_features` (N_img, T, C), `video_frame_features` (N_vid, F, T, C), `audio_embeds` (N_aud, T_max, kC).
        """
        out = {}
        if image_features is None and pixel_values is not None:
            image_features = self._frozen_aware(self.vision, pixel_values)  # (N_img, T, C)
        if image_features is not None:
            out["image"] = list(self._connect("image", image_features))  # N_img × (T', D)
        if video_frame_features is None and video_pixel_values is not None:
            n, f = video_pixel_values.shape[:2]
            per_frame = self._frozen_aware(self.vision, video_pixel_values.flatten(0, 1))  # (N_vid·F, T, C)
            video_frame_features = per_frame.unflatten(0, (n, f))  # (N_vid, F, T, C)
        if video_frame_features is not None:
            feats = self.video.pool(video_frame_features)  # (N_vid, F'·T, C)
            out["video"] = list(self._connect(self.config.connector_for("video"), feats))  # N_vid × (T', D)
        if audio_embeds is not None:
            clips = [audio_embeds[i, :count] for i, count in enumerate(audio_tokens.tolist())]  # N_aud × (T_i, kC)
        elif audio_features is not None:
            with self._maybe_no_grad(self.audio):
                clips = self.audio.encode_clips(audio_features.to(self._dtype(self.audio)), audio_tokens)
        if audio_embeds is not None or audio_features is not None:
            out["audio"] = [self._connect("audio", clip[None])[0] for clip in clips]  # N_aud × (T_i', D)
        return out

    def embed(self, input_ids: torch.Tensor, **media: torch.Tensor | None) -> tuple[torch.Tensor, MediaContext | None]:
        """Token embeddings (B, L, D) with media features scattered into the placeholder positions, and the
        media the gated cross-attention attends to (None unless fusion.mode=gated_xattn).

        With gated_xattn nothing is scattered: each placeholder gets a learned media-token embedding and the
        returned context goes to the LLM call (`self._fused(context)`), which attends to it.
        """
        items = self.encode_media(**media)
        if self.fusion is not None:
            return self.fusion.embed(input_ids, items, self.placeholder_ids, self.llm.get_input_embeddings())
        is_media = torch.zeros_like(input_ids, dtype=torch.bool)
        for token_id in self.placeholder_ids.values():
            is_media |= input_ids == token_id
        text_ids = input_ids.masked_fill(is_media, 0)  # placeholder ids may lie outside the LLM's vocabulary
        embeds = self.llm.get_input_embeddings()(text_ids)  # (B, L, D)
        for modality, token_id in self.placeholder_ids.items():
            mask = input_ids == token_id  # (B, L)
            n_slots = int(mask.sum())
            feats = torch.cat(items[modality]) if items.get(modality) else None  # (N·T, D)
            n_feats = 0 if feats is None else feats.shape[0]
            if n_slots != n_feats:
                raise PlaceholderMismatchError(
                    f"{modality}: the input has {n_slots} placeholder tokens but the media gave {n_feats} features; "
                    "build inputs with OmniProcessor, which expands each placeholder to the right count"
                )
            if n_feats:
                embeds = embeds.masked_scatter(mask[..., None], feats.to(embeds.dtype))
        return embeds, None

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None, **inputs: torch.Tensor | None,
    ):
        """The LLM's output (loss when `labels` (B, L) is given, logits (B, L, V)). `inputs` holds the processor's
        media tensors (MEDIA_INPUTS, as `encode_media` takes them) and any further LLM keyword arguments."""
        media = {key: inputs.pop(key) for key in MEDIA_INPUTS if key in inputs}
        embeds, context = self.embed(input_ids, **media)
        with self._fused(context):
            return self.llm(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, **inputs)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """New token ids (B, N_new). Media is encoded once; later steps reuse the LLM's KV cache."""
        media = {key: kwargs.pop(key) for key in MEDIA_INPUTS if key in kwargs}
        embeds, context = self.embed(input_ids, **media)
        with self._fused(context):  # gated_xattn: media keys/values are computed on the first step and reused
            return self.llm.generate(inputs_embeds=embeds, attention_mask=attention_mask, **kwargs)

    # Helpers ------------------------------------------------------------------------------------
    def _fused(self, context: MediaContext | None) -> contextlib.AbstractContextManager:
        """Scope of an LLM call; with gated_xattn the blocks attend to `context` (the media of `embed`)."""
        return self.fusion.attending(context) if self.fusion is not None else contextlib.nullcontext()

    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """Parameters a checkpoint stores: connectors, video embedding, LoRA adapters, trained parts."""
        trained = tuple(f"{p}." for p in self.config.trained_parts)
        return {
            name: tensor
            for name, tensor in self.state_dict().items()
            if name.startswith(HEAD_PREFIXES + trained) or "lora_" in name
        }

    def _connect(self, key: str, feats: torch.Tensor) -> torch.Tensor:
        connector = self.connectors[key]
        return connector(feats.to(self._dtype(connector)))

    @staticmethod
    def _dtype(module: nn.Module) -> torch.dtype:
        return next(module.parameters()).dtype

    @staticmethod
    def _maybe_no_grad(module: nn.Module):
        trainable = any(p.requires_grad for p in module.parameters())
        return contextlib.nullcontext() if trainable else torch.no_grad()

    def _frozen_aware(self, encoder: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """Run an encoder without building a graph when none of its weights train."""
        with self._maybe_no_grad(encoder):
            return encoder(inputs.to(self._dtype(encoder)))


def _contiguous_input(module: nn.Module, args: tuple) -> tuple:
    """Give the LM head a densely strided input: on CPU, a bf16 `linear` on a (B, 1, D) view of the prefill's
    hidden states (strides (L·D, D, 1)) takes a slow path (measured: 0.8 s instead of 0.02 s for one row × Qwen2.5's
    151,936 words). `.contiguous()` is not enough: a tensor whose odd strides sit only on size-1 dimensions
    already counts as contiguous, so batch 1 kept the slow path; a copy with the standard strides avoids it."""
    hidden = args[0]
    if hidden.stride() == _standard_strides(hidden.shape):
        return args
    return (hidden.clone(memory_format=torch.contiguous_format), *args[1:])


def _standard_strides(shape: torch.Size) -> tuple[int, ...]:
    """The strides of a fresh row-major tensor of `shape`."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))
