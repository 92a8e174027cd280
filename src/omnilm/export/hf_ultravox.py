"""`--to hf-ultravox`: a Whisper encoder + `swiglu` connector + LLM in the layout vLLM's `UltravoxModel` loads.

transformers has no Ultravox model class, so the layout follows vLLM's loader (model_executor/models/ultravox.py,
transformers_utils/configs/ultravox.py): config `model_type: ultravox` with `audio_config`, `text_config`,
`stack_factor`, `hidden_size` (the projector's inner width), `projector_act: swiglu`, `projector_ln_mid: true`
(v0.5), `num_projector_layers: 0`, `audio_token_index`; weights `audio_tower.*` (Whisper's encoder),
`multi_modal_projector.{ln_pre,linear_1,ln_mid,linear_2}.weight`, `language_model.*` (the causal LM); and an
UltravoxProcessor (this package's ultravox_processing.py, copied in) that expands `<|audio|>`.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

from safetensors.torch import save_file

from omnilm.export import SERVE_HINT
from omnilm.export.chat_template import parts_template
from omnilm.export.weights import llm_dtype_name, merged_llm, pad_vocab, padded_rows, plain_llm

logger = logging.getLogger(__name__)

AUDIO_TOKEN = "<|audio|>"  # the marker vLLM's Ultravox processing looks for


def check(lm) -> list[str]:
    """Every part of `lm` the Ultravox layout cannot express, each with what would make it exportable."""
    cfg, problems = lm.config, []
    if cfg.audio is None:
        return [f"the model has no audio encoder; Ultravox is a speech-text model (images: --to hf-llava), {SERVE_HINT}"]
    if cfg.audio.mode != "embed":
        return [(f"audio.mode {cfg.audio.mode!r} (the Whisper transcript reaches the LLM as text): Ultravox feeds "
                 f"audio tokens; train with audio.mode: embed and connectors.audio.type: swiglu, {SERVE_HINT}")]
    for part, name in (("vision", "image (vision encoder)"), ("video", "video")):
        if getattr(cfg, part) is not None:
            problems.append(f"{name}: Ultravox takes audio only; export an image model with --to hf-llava, {SERVE_HINT}")
    if cfg.fusion.mode != "embed":
        problems.append(f"fusion.mode {cfg.fusion.mode!r} (Flamingo gated cross-attention): Ultravox feeds audio as "
                        f"input tokens; train with fusion.mode: embed, {SERVE_HINT}")
    connector = cfg.connectors["audio"]
    if connector.type != "swiglu":
        problems.append(f"connectors.audio.type {connector.type!r}: Ultravox's projector is the swiglu connector "
                        f"(RMSNorm, Linear, SwiGLU, RMSNorm, Linear); train with connectors.audio.type: swiglu, "
                        f"{SERVE_HINT}")
    return problems


def write(lm, staging: Path) -> None:
    from omnilm.export.ultravox_processing import UltravoxProcessor

    model, layout = lm.model, lm.processor.layout
    tokenizer = copy.deepcopy(lm.processor.tokenizer)
    if AUDIO_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [AUDIO_TOKEN]}, replace_extra_special_tokens=False)
    audio_id = tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)
    base, llm_state = merged_llm(model.llm)
    rows = base.get_input_embeddings().num_embeddings
    padded = padded_rows(rows, audio_id)
    tied = bool(getattr(base.config, "tie_word_embeddings", False))
    state = {f"language_model.{k}": t for k, t in pad_vocab(base, llm_state, padded).items()
             if not (tied and k == "lm_head.weight")}  # a tied head is the embedding table: stored once
    state.update({f"audio_tower.{k}": t for k, t in model.audio.encoder.state_dict().items()})
    state.update({f"multi_modal_projector.{k}": t for k, t in model.connectors["audio"].state_dict().items()})
    save_file({k: t.detach().contiguous() for k, t in state.items()}, str(staging / "model.safetensors"),
              metadata={"format": "pt"})
    (staging / "config.json").write_text(json.dumps(ultravox_config(lm, audio_id=audio_id, vocab=padded), indent=2))

    generation = copy.deepcopy(base.generation_config)
    if padded > rows:  # never generate the audio token or the padding rows omnilm's LLM did not have
        generation.suppress_tokens = list(range(rows, padded))
    generation.save_pretrained(staging)

    tokenizer.chat_template = parts_template(tokenizer.chat_template, placeholders={"audio": AUDIO_TOKEN},
                                             system_prompt=layout.system_prompt)
    processor = UltravoxProcessor(audio_processor=lm.processor.audio_feature_extractor, tokenizer=tokenizer,
                                  stack_factor=layout.audio_stack, chat_template=tokenizer.chat_template)
    processor.register_for_auto_class("AutoProcessor")  # save_pretrained copies ultravox_processing.py beside it
    processor.save_pretrained(staging)
    processor.audio_processor.save_pretrained(staging)  # preprocessor_config.json for readers before v5


def ultravox_config(lm, *, audio_id: int, vocab: int) -> dict:
    """config.json as vLLM's UltravoxConfig reads it."""
    base = plain_llm(lm.model.llm)
    connector = lm.model.connectors["audio"]
    text = {**base.config.to_dict(), "vocab_size": vocab}
    return {
        "architectures": ["UltravoxModel"],
        "model_type": "ultravox",
        "audio_config": lm.model.audio.encoder.config.to_dict(),
        "text_config": text,
        "audio_token_index": audio_id,
        "hidden_size": connector.linear_1.out_features,  # the projector's inner width, before the SwiGLU halves it
        "stack_factor": lm.config.audio.stack_factor,
        "projector_act": "swiglu",
        "projector_ln_mid": True,  # v0.5 layout: RMSNorm after the SwiGLU, none after linear_2
        "num_projector_layers": 0,
        "norm_init": 0.4,
        "ignore_index": -100,
        "vocab_size": vocab,
        "tie_word_embeddings": bool(text.get("tie_word_embeddings", False)),
        "dtype": llm_dtype_name(lm),
    }
