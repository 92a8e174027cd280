"""`--to llama.cpp`: a text GGUF, an mmproj GGUF and an Ollama Modelfile that stock llama.cpp runs on its own.

`model.gguf` is the LLM (LoRA merged) as `--to gguf` writes it, with a chat template that puts llama.cpp's
media marker where a media part is. `mmproj.gguf` is the media encoder and connector, written by llama.cpp's
own converter from this model's hf-llava export (SigLIP tower + mlp connector → clip.cpp's "mlp"
projector; CLIP towers wait for an upstream fix, see CLIP_CLS_BUG) or hf-ultravox export (Whisper + swiglu connector → "ultravox"). llama-mtmd-cli, llama-server and
llama-cpp-python's mtmd bindings load the pair (`-m model.gguf --mmproj mmproj.gguf`); Ollama reads the
Modelfile. A model with neither image nor speech tokens gets the text GGUF alone.

Only what clip.cpp's graphs compute exactly is exported. Two differences remain that no export can remove:
llama.cpp letterboxes a non-square image where omnilm centre-crops it, and it encodes speech in whole 30 s
windows (the clip, then silence) where omnilm encodes the clip's own length.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from omnilm.export import SERVE_HINT
from omnilm.export.chat_template import parts_template
from omnilm.generation import eos_token_ids

logger = logging.getLogger(__name__)

TEXT_FILE, MMPROJ_FILE, MODELFILE = "model.gguf", "mmproj.gguf", "Modelfile"
MEDIA_MARKER = "<__media__>"  # mtmd_default_marker(): where llama.cpp's tokenizer puts a media item's tokens
MLP_TOWERS = ("siglip_vision_model",)  # the towers clip.cpp's llava graph runs as transformers does
CLIP_CLS_BUG = "ggml-org/llama.cpp#25814"  # llava graph: CLS concatenated after the patches, inputs CLS-first
TOWER_ACTS = ("quick_gelu", "gelu_pytorch_tanh")  # clip.cpp's default FFN and its `use_gelu` (tanh) one


def check(lm) -> list[str]:
    """Every part of `lm` stock llama.cpp cannot run as omnilm does, each with what would make it exportable."""
    from omnilm.encoders.vision import prefix_token_count, vision_tower_config
    from omnilm.export import hf_llava, hf_ultravox

    cfg = lm.config
    if cfg.fusion.mode != "embed":
        return [f"fusion.mode {cfg.fusion.mode!r} (Flamingo gated cross-attention inside the LLM): llama.cpp feeds "
                f"media as input embeddings only; train with fusion.mode: embed, {SERVE_HINT}"]
    problems = []
    if cfg.video is not None:
        problems.append(f"video (frames + temporal pooling + frame-order embedding): clip.cpp has no such graph; "
                        f"build the model without `video`, {SERVE_HINT}")
    image = cfg.vision is not None and "image" in cfg.connectors
    if cfg.audio is not None and cfg.audio.mode != "embed":
        problems.append(f"audio.mode {cfg.audio.mode!r} (Whisper's transcript reaches the LLM as text): llama.cpp "
                        f"has no Whisper decoder; train with audio.mode: embed and connectors.audio.type: swiglu, "
                        f"{SERVE_HINT}")
    speech = cfg.audio is not None and cfg.audio.mode == "embed"
    if image and speech:
        problems.append(f"both an image and a speech path: the mmproj written here carries one encoder; export "
                        f"the image model and the speech model separately, {SERVE_HINT}")
    if problems:
        return problems
    if image:
        problems = [f"{p} (llama.cpp's mlp projector runs the Llava layout)" for p in hf_llava.check(lm)]
        tower = vision_tower_config(lm.model.vision.tower.config)
        if tower.model_type == "clip_vision_model":
            problems.append(f"the CLIP tower: stock llama.cpp's llava graph puts the CLS token last while it feeds "
                            f"positions and picks patches as if it came first, so every patch gets its neighbour's "
                            f"position and the CLS output reaches the LLM as an image token ({CLIP_CLS_BUG}, not "
                            f"fixed in this llama.cpp); a SigLIP tower (no CLS token) exports exactly, {SERVE_HINT}")
        elif tower.model_type not in MLP_TOWERS:
            problems.append(f"the {tower.model_type} vision tower: clip.cpp's mlp projector runs CLIP and SigLIP "
                            f"towers only (DINOv2's layer scale is not in its graph); use a SigLIP tower, "
                            f"{SERVE_HINT}")
        else:
            if tower.hidden_act not in TOWER_ACTS:
                problems.append(f"the tower's hidden_act {tower.hidden_act!r}: clip.cpp runs {' or '.join(TOWER_ACTS)}")
            if prefix_token_count(tower) and not cfg.vision.drop_cls:
                problems.append("vision.drop_cls: false (the CLS token kept): clip.cpp's mlp projector always drops "
                                "it; set vision.drop_cls: true and retrain the connector")
        if cfg.connectors["image"].type == "linear":
            problems.append(f"connectors.image.type 'linear': clip.cpp's mlp projector always applies GELU after "
                            f"its first layer; use connectors.image.type: mlp, {SERVE_HINT}")
    elif speech:
        problems = [f"{p} (llama.cpp's ultravox projector runs the Ultravox layout)" for p in hf_ultravox.check(lm)]
    return problems


def write(lm, staging: Path, *, quant: str = "Q4_K_M") -> None:
    from omnilm.export.gguf import write_llm
    from omnilm.llamacpp.convert import check_quant

    quant = check_quant(quant)
    layout = lm.processor.layout
    template = parts_template(lm.processor.tokenizer.chat_template,
                              placeholders={m: MEDIA_MARKER for m in ("image", "audio")},
                              system_prompt=layout.system_prompt)
    write_llm(lm, staging / TEXT_FILE, quant=quant, chat_template=template)
    kind = media_kind(lm)
    if kind is not None:
        write_mmproj(lm, staging / MMPROJ_FILE, kind=kind, outtype="f32" if quant == "F32" else "f16")
    (staging / MODELFILE).write_text(modelfile(lm, mmproj=kind is not None))


def media_kind(lm) -> str | None:
    """'image', 'audio' or None: which encoder the mmproj carries (check() allows at most one)."""
    cfg = lm.config
    if cfg.vision is not None and "image" in cfg.connectors:
        return "image"
    if cfg.audio is not None and cfg.audio.mode == "embed":
        return "audio"
    return None


def write_mmproj(lm, target: Path, *, kind: str, outtype: str) -> None:
    """The media encoder + connector of `lm` as llama.cpp's mmproj, converted from a temporary hf export."""
    from omnilm.export import hf_llava, hf_ultravox
    from omnilm.llamacpp.convert import convert

    layout = hf_llava if kind == "image" else hf_ultravox
    with tempfile.TemporaryDirectory(prefix="omnilm-mmproj-") as tmp:
        layout.write(lm, Path(tmp))
        convert(Path(tmp), target, outtype=outtype, mmproj=True)
    logger.info("wrote %s (%s encoder, %s)", target, kind, outtype)


def modelfile(lm, *, mmproj: bool) -> str:
    """An Ollama Modelfile for the pair: the GGUFs, greedy-friendly defaults, the stop tokens.

    Ollama takes the chat template from the GGUF; the stop strings are the LLM's end-of-turn tokens."""
    tokenizer = lm.processor.tokenizer
    stops = [tokenizer.convert_ids_to_tokens(i) for i in sorted(eos_token_ids(lm.model.llm.generation_config))]
    lines = [f"FROM ./{TEXT_FILE}", *([f"FROM ./{MMPROJ_FILE}"] if mmproj else [])]
    lines += [f"PARAMETER stop {json.dumps(s)}" for s in stops]
    penalty = lm.model.llm.generation_config.repetition_penalty
    if penalty not in (None, 1.0):
        lines.append(f"PARAMETER repeat_penalty {penalty}")
    if lm.processor.layout.system_prompt:
        lines.append(f"SYSTEM {json.dumps(lm.processor.layout.system_prompt)}")
    return "\n".join(lines) + "\n"
