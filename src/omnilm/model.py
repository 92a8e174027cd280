"""OmniModel: encoders + connectors + any causal LLM, merged at placeholder positions."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
from torch import nn

from omnilm.config import OmniConfig
from omnilm.connectors import build_connector
from omnilm.encoders import AudioEncoder, VideoEncoder, VisionEncoder, WhisperTranscriber, load_vision_tower
from omnilm.errors import PlaceholderMismatchError
from omnilm.layout import MediaLayout
from omnilm.sources import resolve_source

logger = logging.getLogger(__name__)

HEAD_PREFIXES = ("connectors.", "video.")  # always trained, always saved


def torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


class OmniModel(nn.Module):
    """input_ids (B, L) with N placeholder ids per media item + media tensors → LLM output.

    Parts: `llm` (AutoModelForCausalLM), `vision`, `audio` (encoders), `video` (frame-order embedding
    over the vision encoder), `connectors` (one per modality key), `transcriber` (audio.mode=transcribe).
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
    ) -> dict[str, torch.Tensor]:
        """Media → LLM-width features, one (N_items·T, D) tensor per modality, in placeholder order."""
        out = {}
        if pixel_values is not None:
            feats = self._frozen_aware(self.vision, pixel_values)  # (N_img, T, C)
            out["image"] = self._connect("image", feats).flatten(0, 1)  # (N_img·T', D)
        if video_pixel_values is not None:
            with self._maybe_no_grad(self.vision):
                feats = self.video(video_pixel_values.to(self._dtype(self.vision)), self.vision)  # (N_vid, F'·T, C)
            out["video"] = self._connect(self.config.connector_for("video"), feats).flatten(0, 1)  # (N_vid·T', D)
        if audio_features is not None:
            clips = []
            for feats, frames in zip(audio_features, audio_frames.tolist()):
                clip = self._frozen_aware(self.audio, feats[None, :, :frames])  # (1, T_i, kC)
                clips.append(self._connect("audio", clip)[0])  # (T_i', D)
            out["audio"] = torch.cat(clips)
        return out

    def embed(self, input_ids: torch.Tensor, **media: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings (B, L, D) with media features scattered into the placeholder positions."""
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
        **llm_kwargs,
    ):
        """Returns the LLM's output (loss when `labels` (B, L) is given, logits (B, L, V))."""
        embeds = self.embed(
            input_ids,
            pixel_values=pixel_values,
            audio_features=audio_features,
            audio_frames=audio_frames,
            video_pixel_values=video_pixel_values,
        )
        return self.llm(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, **llm_kwargs)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """New token ids (B, N_new). Media is encoded once; later steps reuse the LLM's KV cache."""
        media_keys = ("pixel_values", "audio_features", "audio_frames", "video_pixel_values")
        media = {k: kwargs.pop(k, None) for k in media_keys}
        embeds = self.embed(input_ids, **media)
        return self.llm.generate(inputs_embeds=embeds, attention_mask=attention_mask, **kwargs)

    # Helpers ------------------------------------------------------------------------------------
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
