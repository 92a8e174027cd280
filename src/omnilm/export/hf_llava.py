"""`--to hf-llava`: a transformers `LlavaForConditionalGeneration` directory (weights, config, processor files).

Llava is one vision tower (any AutoModel), the hidden state of one layer, CLS dropped ("default") or every
token kept ("full"), a Linear-act-Linear projector and the LLM. Token counts are derived from the tower's
config: SigLIP has no CLS token, CLIP and DINOv2 one, DINOv2-with-registers 1 + registers, and Llava's
"default" strategy drops exactly one.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch

from omnilm.encoders.vision import prefix_token_count, vision_tower_config
from omnilm.export import SERVE_HINT
from omnilm.export.chat_template import parts_template
from omnilm.export.weights import llm_dtype_name, load_into_meta, merged_llm, pad_vocab, padded_rows, plain_llm

logger = logging.getLogger(__name__)

INTERPOLATING_TOWERS = ("dinov2", "dinov2_with_registers")  # resize position embeddings to any input on their own
CONNECTOR_ADVICE = {
    "resblock": "a residual MLP after the projection; Llava's projector is Linear-act-Linear: use `mlp`",
    "perceiver": "learned latents resample the tokens; Llava feeds one token per patch: use `mlp` or `linear`",
    "qformer": "a Q-Former (learned queries + cross-attention); Llava feeds one token per patch: use `mlp`",
    "swiglu": "the Ultravox-style audio projector; for images Llava takes `mlp` or `linear`",
}


def check(lm) -> list[str]:
    """Every part of `lm` a Llava directory cannot express, each with what would make it exportable."""
    cfg, problems = lm.config, []
    if cfg.vision is None or "image" not in cfg.connectors:
        return [f"the model has no image path (vision encoder + connector); Llava is an image-text model, {SERVE_HINT}"]
    if cfg.audio is not None:
        problems.append(f"audio (Whisper {cfg.audio.mode}): Llava has no audio path; export the speech model with "
                        f"--to hf-ultravox (Whisper + swiglu connector), {SERVE_HINT}")
    if cfg.video is not None:
        problems.append(f"video (frames + temporal pooling + frame-order embedding): Llava takes images only; "
                        f"build the model without `video`, {SERVE_HINT}")
    if cfg.fusion.mode != "embed":
        problems.append(f"fusion.mode {cfg.fusion.mode!r} (Flamingo gated cross-attention inside the LLM): Llava "
                        f"feeds media as input tokens only; train with fusion.mode: embed, {SERVE_HINT}")
    v = cfg.vision
    if v.pooling != "none" and v.pool_size > 1:
        kind = "average-pooled" if v.pooling == "avg" else "pixel-shuffled"
        problems.append(f"vision.pooling {v.pooling!r} ({kind} {v.pool_size}x{v.pool_size} patch tokens): Llava feeds "
                        f"every patch token to the projector; set vision.pooling: none and retrain the connector, "
                        f"{SERVE_HINT}")
    tower = vision_tower_config(lm.model.vision.tower.config)
    prefix = prefix_token_count(tower)
    if v.drop_cls and prefix > 1:
        problems.append(f"vision.drop_cls with {prefix - 1} register tokens ({tower.model_type}): Llava's 'default' "
                        f"strategy drops only the CLS token; set vision.drop_cls: false ('full') and retrain, "
                        f"{SERVE_HINT}")
    side = lm.processor.layout.image_size
    if tower.model_type not in INTERPOLATING_TOWERS and side != tower.image_size:
        problems.append(f"vision.image_size {side} differs from the {tower.model_type} tower's {tower.image_size}: "
                        f"Llava runs the tower without position interpolation; set vision.image_size: "
                        f"{tower.image_size}")
    connector = cfg.connectors["image"]
    width = lm.model.llm.get_input_embeddings().embedding_dim
    if connector.type in CONNECTOR_ADVICE:
        problems.append(f"connectors.image.type {connector.type!r}: {CONNECTOR_ADVICE[connector.type]}, {SERVE_HINT}")
    elif connector.type == "mlp" and (connector.hidden_dim or width) != width:
        problems.append(f"connectors.image.hidden_dim {connector.hidden_dim}: Llava's projector is as wide as the LLM "
                        f"({width}); leave hidden_dim unset and retrain")
    return problems


def vocab_sizes(lm) -> tuple[int, int]:
    """(the LLM's embedding rows, the exported rows: grown past the image token's id where the LLM lacks it)."""
    rows = lm.model.llm.get_input_embeddings().num_embeddings
    return rows, padded_rows(rows, lm.processor.placeholder_ids["image"])


def select_strategy(lm) -> tuple[str, int]:
    """Llava's (vision_feature_select_strategy, num_additional_image_tokens), from the tower's config."""
    prefix = prefix_token_count(lm.model.vision.tower.config)
    return ("default" if lm.config.vision.drop_cls and prefix == 1 else "full"), prefix


def llava_config(lm):
    import transformers

    cfg = lm.config
    base = plain_llm(lm.model.llm)
    strategy, _ = select_strategy(lm)
    tower = vision_tower_config(lm.model.vision.tower.config)
    return transformers.LlavaConfig(
        vision_config=tower.to_dict(),
        text_config={**base.config.to_dict(), "vocab_size": vocab_sizes(lm)[1]},
        image_token_index=lm.processor.placeholder_ids["image"],
        image_seq_length=lm.processor.layout.image_tokens,
        vision_feature_layer=cfg.vision.feature_layer,
        vision_feature_select_strategy=strategy,
        projector_hidden_act="gelu" if cfg.connectors["image"].type == "mlp" else "linear",
        multimodal_projector_bias=True,
        tie_word_embeddings=bool(getattr(base.config, "tie_word_embeddings", False)),
        dtype=llm_dtype_name(lm),
    )


def llava_state(lm) -> dict[str, torch.Tensor]:
    """omnilm's weights under Llava's names: vision tower, projector, language model, LM head."""
    model = lm.model
    base, llm_state = merged_llm(model.llm)
    prefix = f"{base.base_model_prefix}."
    llm_state = pad_vocab(base, llm_state, vocab_sizes(lm)[1])
    state = {(f"model.language_model.{k[len(prefix):]}" if k.startswith(prefix) else k): t
             for k, t in llm_state.items()}
    state.update({f"model.vision_tower.{k}": t for k, t in model.vision.tower.state_dict().items()})
    connector = model.connectors["image"]
    if lm.config.connectors["image"].type == "mlp":
        first, last = connector.net[0], connector.net[2]
        projector = {"linear_1.weight": first.weight, "linear_1.bias": first.bias,
                     "linear_2.weight": last.weight, "linear_2.bias": last.bias}
    else:  # linear: act "linear" (identity) and an identity linear_2 reproduce it exactly
        width = connector.proj.out_features
        projector = {"linear_1.weight": connector.proj.weight, "linear_1.bias": connector.proj.bias,
                     "linear_2.weight": torch.eye(width, dtype=connector.proj.weight.dtype),
                     "linear_2.bias": torch.zeros(width, dtype=connector.proj.weight.dtype)}
    state.update({f"model.multi_modal_projector.{k}": t for k, t in projector.items()})
    return {k: t.detach() for k, t in state.items()}


def write(lm, staging: Path) -> None:
    import transformers

    config = llava_config(lm)
    llava = load_into_meta(lambda: transformers.LlavaForConditionalGeneration(config), llava_state(lm))
    base = plain_llm(lm.model.llm)
    if base.generation_config is not None:
        llava.generation_config = copy.deepcopy(base.generation_config)
    rows, padded = vocab_sizes(lm)
    if padded > rows:  # never generate the image token or the padding rows omnilm's LLM did not have
        llava.generation_config.suppress_tokens = list(range(rows, padded))
    llava.save_pretrained(staging)
    llava_processor = processor(lm)
    llava_processor.save_pretrained(staging)
    llava_processor.image_processor.save_pretrained(staging)  # preprocessor_config.json, for readers before v5
    _check_token_count(lm, staging)


def processor(lm):
    """A LlavaProcessor that renders the same prompt and pixels as omnilm's processor."""
    import transformers

    layout = lm.processor.layout
    strategy, extra = select_strategy(lm)
    side = layout.image_size
    images = transformers.CLIPImageProcessor(  # omnilm's pixels: short side to S (bicubic), centre crop, normalise
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}, do_center_crop=True,
        resample=3, image_mean=list(layout.image_mean), image_std=list(layout.image_std), do_convert_rgb=True,
    )
    tokenizer = lm.processor.tokenizer
    return transformers.LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=vision_tower_config(lm.model.vision.tower.config).patch_size,
        vision_feature_select_strategy=strategy,
        chat_template=parts_template(tokenizer.chat_template, placeholders=layout.placeholders,
                                     system_prompt=layout.system_prompt),
        image_token=layout.placeholders["image"],
        num_additional_image_tokens=extra,
    )


def _check_token_count(lm, staging: Path) -> None:
    """The exported processor must expand an image to exactly omnilm's token count."""
    import transformers

    config = json.loads((staging / "config.json").read_text())
    saved = transformers.AutoProcessor.from_pretrained(staging)
    side = lm.processor.layout.image_size
    patches = (side // saved.patch_size) ** 2
    count = patches + saved.num_additional_image_tokens - (saved.vision_feature_select_strategy == "default")
    if count != lm.processor.layout.image_tokens or config["image_seq_length"] != count:
        raise RuntimeError(f"exported Llava expands an image to {count} tokens, omnilm to "
                           f"{lm.processor.layout.image_tokens}: a bug in the hf-llava export")
