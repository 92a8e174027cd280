"""OmniModel: encoders + connectors + any causal LLM, merged at placeholder positions."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
from torch import nn

from omnilm.config import OmniConfig, torch_dtype
from omnilm.connectors import build_connector, connector_tokens
from omnilm.encoders import AudioEncoder, VideoEncoder, VisionEncoder, WhisperTranscriber, load_vision_tower
from omnilm.encoders.audio import mel_frames_per_token
from omnilm.errors import PlaceholderMismatchError
from omnilm.fusion import GatedXAttnFusion
from omnilm.layout import MediaLayout
from omnilm.sources import resolve_source

logger = logging.getLogger(__name__)

HEAD_PREFIXES = ("connectors.", "video.", "fusion.")  # always trained, always saved


class OmniModel(nn.Module):
    """input_ids (B, L) with N placeholder ids per media item + media tensors → LLM output.

    Parts: `llm` (AutoModelForCausalLM), `vision`, `audio` (encoders), `video` (frame-order embedding
    over the vision encoder), `connectors` (one per modality key), `transcriber` (audio.mode=transcribe),
    `fusion` (fusion.mode=gated_xattn: cross-attention blocks hooked into the LLM; one placeholder per item).
    """

    def __init__(
        self,
        config: OmniConfig,
        *,
        llm: nn.Module,
        placeholder_ids: dict[str, int],
        vision: VisionEncoder | None = None,
        audio: AudioEncoder | None = None,
        transcriber: WhisperTranscriber | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.llm = llm
        self.vision = vision
        self.audio = audio
        self.transcriber = transcriber
        self.placeholder_ids = dict(placeholder_ids)
        llm_width = llm.get_input_embeddings().embedding_dim
        head = llm.get_output_embeddings()
        if head is not None:  # generation's prefill feeds it hidden[:, -1:], a strided view: see _contiguous_input
            head.register_forward_pre_hook(_contiguous_input)
        self.video = None
        if config.video is not None:
            self.video = VideoEncoder(
                num_frames=config.video.num_frames, temporal_pool=config.video.temporal_pool, dim=vision.out_dim
            )
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
        for part in (vision, audio, transcriber):
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
    ) -> OmniModel:
        """Load each base part from its source and build fresh connectors.

        `layout` and `placeholder_ids` come from the processor; without them one is built to read them.
        """
        import transformers

        if layout is None or placeholder_ids is None:
            from omnilm.processor import OmniProcessor

            processor = OmniProcessor.from_config(config, base_dir)
            layout, placeholder_ids = processor.layout, processor.placeholder_ids

        llm = transformers.AutoModelForCausalLM.from_pretrained(
            resolve_source(config.llm.source, base_dir),
            dtype=torch_dtype(config.llm.dtype),
            trust_remote_code=config.llm.trust_remote_code,
        )
        vision = audio = transcriber = None
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
        if config.audio is not None:
            source = resolve_source(config.audio.source, base_dir)
            whisper = transformers.WhisperForConditionalGeneration.from_pretrained(
                source, dtype=torch_dtype(config.audio.dtype)
            )
            if config.audio.mode == "embed":
                audio = AudioEncoder(whisper.model.encoder, stack_factor=config.audio.stack_factor)
            else:
                transcriber = WhisperTranscriber(
                    whisper,
                    transformers.WhisperFeatureExtractor.from_pretrained(source),
                    transformers.AutoTokenizer.from_pretrained(source),
                    prompt=config.audio.transcribe_prompt,
                    num_beams=config.audio.transcribe_beams,
                )
        return cls(
            config, llm=llm, placeholder_ids=placeholder_ids, vision=vision, audio=audio, transcriber=transcriber
        )

    @classmethod
    def from_pretrained(cls, path_or_ref: str | Path) -> OmniModel:
        """Load the model of an omnilm checkpoint (directory or pkg:/hub reference)."""
        from omnilm.checkpoint import load_checkpoint

        return load_checkpoint(resolve_source(str(path_or_ref)))[0]

    def save_pretrained(self, directory: str | Path, *, processor, full: bool = False) -> Path:
        """Write a checkpoint (needs the processor: a checkpoint carries its tokenizer and layout)."""
        from omnilm.checkpoint import save_checkpoint

        return save_checkpoint(self, processor, directory, full=full)

    # Forward ------------------------------------------------------------------------------------
    def encode_media(
        self,
        pixel_values: torch.Tensor | None = None,
        audio_features: torch.Tensor | None = None,
        audio_frames: torch.Tensor | None = None,
        video_pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        audio_embeds: torch.Tensor | None = None,
        video_frame_features: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Media → LLM-width features, one (N_items·T, D) tensor per modality, in placeholder order.

        Encoder outputs computed earlier (a feature cache of frozen encoders) may replace the raw media:
        `image_features` (N_img, T, C), `video_frame_features` (N_vid, F, T, C), `audio_embeds`
        (N_aud, T_max, kC) with `audio_frames` still giving each clip's length.
        """
        out = {}
        if image_features is None and pixel_values is not None:
            image_features = self._frozen_aware(self.vision, pixel_values)  # (N_img, T, C)
        if image_features is not None:
            out["image"] = self._connect("image", image_features).flatten(0, 1)  # (N_img·T', D)
        if video_frame_features is None and video_pixel_values is not None:
            n, f = video_pixel_values.shape[:2]
            per_frame = self._frozen_aware(self.vision, video_pixel_values.flatten(0, 1))  # (N_vid·F, T, C)
            video_frame_features = per_frame.unflatten(0, (n, f))  # (N_vid, F, T, C)
        if video_frame_features is not None:
            feats = self.video.pool(video_frame_features)  # (N_vid, F'·T, C)
            out["video"] = self._connect(self.config.connector_for("video"), feats).flatten(0, 1)  # (N_vid·T', D)
        if audio_features is not None or audio_embeds is not None:
            frames_per_token = mel_frames_per_token(self.config.audio.stack_factor)
            clips = []
            for i, frames in enumerate(audio_frames.tolist()):
                if audio_embeds is not None:
                    clip = audio_embeds[i : i + 1, : frames // frames_per_token]  # (1, T_i, kC)
                else:
                    clip = self._frozen_aware(self.audio, audio_features[i : i + 1, :, :frames])  # (1, T_i, kC)
                clips.append(self._connect("audio", clip)[0])  # (T_i', D)
            out["audio"] = torch.cat(clips)
        return out

    def embed(self, input_ids: torch.Tensor, **media: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings (B, L, D) with media features scattered into the placeholder positions.

        With fusion.mode=gated_xattn nothing is scattered: each placeholder gets a learned media-token
        embedding and the media wait for the LLM call made inside `self._fused()`, which attends to them.
        """
        if self.fusion is not None:
            items = self._media_items(media)
            return self.fusion.embed(input_ids, items, self.placeholder_ids, self.llm.get_input_embeddings())
        is_media = torch.zeros_like(input_ids, dtype=torch.bool)
        for token_id in self.placeholder_ids.values():
            is_media |= input_ids == token_id
        text_ids = input_ids.masked_fill(is_media, 0)  # placeholder ids may lie outside the LLM's vocabulary
        embeds = self.llm.get_input_embeddings()(text_ids)  # (B, L, D)
        features = self.encode_media(**media)
        for modality, token_id in self.placeholder_ids.items():
            mask = input_ids == token_id  # (B, L)
            n_slots = int(mask.sum())
            feats = features.get(modality)
            n_feats = 0 if feats is None else feats.shape[0]
            if n_slots != n_feats:
                raise PlaceholderMismatchError(
                    f"{modality}: the input has {n_slots} placeholder tokens but the media gave {n_feats} features; "
                    "build inputs with OmniProcessor, which expands each placeholder to the right count"
                )
            if n_feats:
                embeds = embeds.masked_scatter(mask[..., None], feats.to(embeds.dtype))
        return embeds

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        audio_features: torch.Tensor | None = None,
        audio_frames: torch.Tensor | None = None,
        video_pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        audio_embeds: torch.Tensor | None = None,
        video_frame_features: torch.Tensor | None = None,
        **llm_kwargs,
    ):
        """Returns the LLM's output (loss when `labels` (B, L) is given, logits (B, L, V))."""
        embeds = self.embed(
            input_ids,
            pixel_values=pixel_values,
            audio_features=audio_features,
            audio_frames=audio_frames,
            video_pixel_values=video_pixel_values,
            image_features=image_features,
            audio_embeds=audio_embeds,
            video_frame_features=video_frame_features,
        )
        with self._fused():
            return self.llm(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, **llm_kwargs)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """New token ids (B, N_new). Media is encoded once; later steps reuse the LLM's KV cache."""
        media_keys = ("pixel_values", "audio_features", "audio_frames", "video_pixel_values")
        media = {k: kwargs.pop(k, None) for k in media_keys}
        embeds = self.embed(input_ids, **media)
        with self._fused():  # gated_xattn: media keys/values are computed on the first step and reused
            return self.llm.generate(inputs_embeds=embeds, attention_mask=attention_mask, **kwargs)

    # Helpers ------------------------------------------------------------------------------------
    def _fused(self) -> contextlib.AbstractContextManager:
        """Scope of an LLM call; with gated_xattn the blocks attend to the media of the last `embed`."""
        return self.fusion.attending() if self.fusion is not None else contextlib.nullcontext()

    def _media_items(self, media: dict) -> dict[str, list[torch.Tensor]]:
        """`encode_media`'s features cut into items: per modality, a list of (T_i, D) tensors."""
        features = self.encode_media(**media)
        items = {}
        for modality, feats in features.items():
            if modality == "audio":  # clips differ in length: count each clip's tokens
                connector = self.config.connectors["audio"]
                frames_per_token = mel_frames_per_token(self.config.audio.stack_factor)
                sizes = [
                    connector_tokens(connector.type, frames // frames_per_token, **connector.options)
                    for frames in media["audio_frames"].tolist()
                ]
                items[modality] = list(feats.split(sizes))
            else:  # images / videos of one batch all yield the same count
                raw = media.get("pixel_values" if modality == "image" else "video_pixel_values")
                cached = media.get("image_features" if modality == "image" else "video_frame_features")
                items[modality] = list(feats.unflatten(0, ((raw if raw is not None else cached).shape[0], -1)))
        return items

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
    """Make the LM head's input contiguous: on CPU, a bf16 `linear` on a strided (B, 1, D) view of the prefill's
    hidden states takes a slow path (measured: 8.9 s instead of 0.03 s for 16 rows × Qwen2.5's 151,936 words)."""
    return (args[0].contiguous(), *args[1:])
