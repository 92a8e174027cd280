"""Run llama.cpp's convert_hf_to_gguf.py from CONVERTER_DIR with its own gguf-py (a script: imports no omnilm).

usage: python converter_main.py CONVERTER_DIR HF_DIR [convert_hf_to_gguf options]
       python converter_main.py CONVERTER_DIR --lora ADAPTER_DIR [convert_lora_to_gguf options]

One addition to the converter: it recognises a tokenizer by the hash of its ids for a test text, so a new
vocabulary (omnilm's tiny test models) is unknown to it even when its pre-tokenizer is a known one. Such a
byte-level BPE tokenizer whose pre-tokenizer is exactly Qwen2's split regex, or GPT-2's plain byte-level
regex, is written with llama.cpp's "qwen2" or "gpt2" pre-tokenizer; any other still fails as the converter decides.

A second addition: the converter writes an mmproj for a Llava directory only when its tower is Pixtral (its
LLaVA-1.5 path is a legacy script that reads pickles). A Llava directory with a CLIP or SigLIP tower and a
Linear-GELU-Linear projector (what `omnilm export --to hf-llava` writes) gets clip.cpp's "mlp" projector here:
the tower's blocks up to `vision_feature_layer`, no post-layernorm (Llava reads the layer's hidden state), the
projector as `mm.0` and `mm.2`.
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")


def _known_pre_tokenizer(tokenizer) -> str | None:
    """llama.cpp's name for `tokenizer`'s pre-tokenizer when it is one of two known exactly, else None."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = (json.loads(backend.to_str()).get("pre_tokenizer") or {}) if backend is not None else {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt2"
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    if (len(steps) == 2 and steps[0].get("type") == "Split" and steps[0].get("pattern") == {"Regex": QWEN2_SPLIT}
            and steps[1].get("type") == "ByteLevel" and not steps[1].get("use_regex", True)):
        return "qwen2"
    return None


LLAVA_MLP_TOWERS = ("clip_vision_model", "siglip_vision_model")
TOWER_TENSORS = {  # Llava tower names (after "vision_tower." and an optional "vision_model.") → clip.cpp's
    "embeddings.class_embedding": "v.class_embd",
    "embeddings.patch_embedding.weight": "v.patch_embd.weight",
    "embeddings.patch_embedding.bias": "v.patch_embd.bias",
    "embeddings.position_embedding.weight": "v.position_embd.weight",
    "pre_layrnorm.weight": "v.pre_ln.weight",
    "pre_layrnorm.bias": "v.pre_ln.bias",
}
BLOCK_TENSORS = {"layer_norm1": "ln1", "layer_norm2": "ln2", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                 "self_attn.v_proj": "attn_v", "self_attn.out_proj": "attn_out", "mlp.fc1": "ffn_up",
                 "mlp.fc2": "ffn_down"}
PROJECTOR_TENSORS = {"linear_1": "mm.0", "linear_2": "mm.2"}


def _llava_mlp_names(hf_dir: Path) -> list[str]:
    """The architecture names the converter may look up for `hf_dir` when it is a Llava with a CLIP/SigLIP tower
    (its own, then the vision config's, which the converter prefers), else none."""
    config = json.loads((hf_dir / "config.json").read_text())
    vision = config.get("vision_config", {})
    if config.get("architectures") != ["LlavaForConditionalGeneration"] or vision.get("model_type") not in LLAVA_MLP_TOWERS:
        return []
    return ["LlavaForConditionalGeneration", *vision.get("architectures", [])]


def _register_llava_mlp(names: list[str]) -> None:
    """Convert Llava (CLIP/SigLIP tower + mlp projector) mmprojs with the class below instead of the stock one."""
    import conversion
    import conversion.llava  # noqa: F401  (the stock registration, replaced below)
    from conversion import base

    gguf = base.gguf

    class LlavaMlpMmproj(base.MmprojModel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            depth = self.hparams["num_hidden_layers"]
            layer = self.global_config["vision_feature_layer"]
            self.feature_layer = layer if layer >= 0 else depth + 1 + layer  # hidden_states index, 0: embeddings
            self.hparams["num_hidden_layers"] = self.feature_layer  # blocks past the feature layer are not written

        def set_gguf_parameters(self):
            super().set_gguf_parameters()
            self.gguf_writer.add_clip_projector_type("mlp")
            self.gguf_writer.add_vision_attention_layernorm_eps(self.hparams["layer_norm_eps"])
            self.gguf_writer.add_vision_feature_layers([self.feature_layer])
            if self.hparams["hidden_act"] == "gelu_pytorch_tanh":  # SigLIP; CLIP's quick_gelu is clip.cpp's default
                self.gguf_writer.add_vision_use_gelu(True)

        def filter_tensors(self, item):
            name, gen = item
            name = name.removeprefix("model.")
            return (name, gen) if name.startswith(("vision_tower.", "multi_modal_projector.")) else None

        def modify_tensors(self, data_torch, name, bid):
            name = name.removeprefix("model.")
            if name.startswith("multi_modal_projector."):
                layer, _, kind = name.removeprefix("multi_modal_projector.").partition(".")
                yield f"{PROJECTOR_TENSORS[layer]}.{kind}", data_torch
                return
            name = name.removeprefix("vision_tower.").removeprefix("vision_model.")
            if name in TOWER_TENSORS:
                yield TOWER_TENSORS[name], data_torch
                return
            if name.startswith("encoder.layers."):
                index, _, rest = name.removeprefix("encoder.layers.").partition(".")
                module, _, kind = rest.rpartition(".")
                if int(index) < self.feature_layer:
                    yield f"v.blk.{index}.{BLOCK_TENSORS[module]}.{kind}", data_torch
                return
            if not name.startswith(("post_layernorm.", "head.")):  # Llava reads blocks' outputs: neither is used
                raise ValueError(f"unexpected Llava vision tensor {name!r}")

        def tensor_force_quant(self, name, new_name, bid, n_dims):
            if new_name in ("v.class_embd", "v.position_embd.weight"):
                return gguf.GGMLQuantizationType.F32
            return super().tensor_force_quant(name, new_name, bid, n_dims)

    for name in names:
        conversion.MMPROJ_MODEL_MAP[name] = "llava"
        base.ModelBase._model_classes[base.ModelType.MMPROJ][name] = LlavaMlpMmproj


def main(argv: list[str]) -> None:
    root = Path(argv[0])
    sys.path[:0] = [str(root), str(root / "gguf-py")]
    from conversion import base

    original = base.TextModel.get_vocab_base_pre

    def vocab_base_pre(self, tokenizer) -> str:
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            known = _known_pre_tokenizer(tokenizer)
            if known is None:
                raise
            return known

    base.TextModel.get_vocab_base_pre = vocab_base_pre
    if argv[1] == "--lora":  # a PEFT adapter: llama.cpp's LoRA converter, on the same conversion classes
        script, args = root / "convert_lora_to_gguf.py", argv[2:]
    else:
        names = _llava_mlp_names(Path(argv[1])) if "--mmproj" in argv else []
        if names:
            _register_llava_mlp(names)
        script, args = root / "convert_hf_to_gguf.py", argv[1:]
    sys.argv = [str(script), *args]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
