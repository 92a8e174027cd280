"""`--to hf-llava`: the directory loads with plain transformers and matches omnilm (logits, greedy text, token
counts per tower family); LoRA is merged; what Llava cannot express is refused before anything is written."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from export_helpers import assert_llava_matches

from omnilm.config import FusionConfig, VisionConfig
from omnilm.export import ExportError, export
from omnilm.lm import OmniLM
from omnilm.testing import tiny_config, tiny_model


@pytest.mark.parametrize("connector", ["mlp", "linear"])
def test_clip_model_loads_in_transformers_and_matches(tmp_path, connector):
    lm = tiny_model(("image",), connector)
    out = export(lm, tmp_path / "llava", to="hf-llava")
    assert {"config.json", "model.safetensors", "chat_template.jinja", "processor_config.json",
            "preprocessor_config.json", "tokenizer.json", "generation_config.json"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert config["vision_feature_select_strategy"] == "default"  # CLIP: one CLS token, dropped
    assert config["image_token_index"] == lm.processor.placeholder_ids["image"]
    assert config["projector_hidden_act"] == ("gelu" if connector == "mlp" else "linear")
    assert assert_llava_matches(lm, out).config.image_seq_length == lm.processor.layout.image_tokens == 16


def test_kept_cls_exports_as_full(tmp_path):
    parts = tiny_config(("image",)).vision.source
    lm = OmniLM.from_config(tiny_config(("image",), vision=VisionConfig(source=parts, drop_cls=False, feature_layer=-2)))
    out = export(lm, tmp_path / "llava", to="hf-llava")
    config = json.loads((out / "config.json").read_text())
    assert (config["vision_feature_select_strategy"], config["vision_feature_layer"]) == ("full", -2)
    assert assert_llava_matches(lm, out).config.image_seq_length == 17  # 16 patches + CLS


def _tower(tmp_path, kind: str) -> str:
    """A tiny SigLIP / DINOv2 / DINOv2-with-registers tower directory with an image processor."""
    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 32, "patch_size": 8}
    if kind == "siglip":
        model = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(intermediate_size=64, **sizes))
    elif kind == "dinov2":
        model = transformers.Dinov2Model(transformers.Dinov2Config(mlp_ratio=2, **sizes))
    else:
        model = transformers.Dinov2WithRegistersModel(
            transformers.Dinov2WithRegistersConfig(mlp_ratio=2, num_register_tokens=4, **sizes))
    path = tmp_path / kind
    model.save_pretrained(path)
    transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                    image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(path)
    return str(path)


@pytest.mark.parametrize(("kind", "drop_cls", "strategy", "extra", "tokens"), [
    ("siglip", True, "full", 0, 16),  # no CLS token: nothing to drop
    ("dinov2", True, "default", 1, 16),
    ("dinov2_registers", False, "full", 5, 21),  # CLS + 4 registers, all kept
])
def test_token_counts_follow_the_tower(tmp_path, kind, drop_cls, strategy, extra, tokens):
    torch.manual_seed(0)
    vision = VisionConfig(source=_tower(tmp_path, kind), drop_cls=drop_cls)
    lm = OmniLM.from_config(tiny_config(("image",), vision=vision))
    out = export(lm, tmp_path / "llava", to="hf-llava")
    config = json.loads((out / "processor_config.json").read_text())
    assert (config["vision_feature_select_strategy"], config["num_additional_image_tokens"]) == (strategy, extra)
    assert_llava_matches(lm, out)
    assert lm.processor.layout.image_tokens == tokens


def test_lora_is_merged_and_the_model_left_alone(tmp_path):
    from omnilm.lora import attach_lora

    lm = tiny_model(("image",))
    attach_lora(lm.model, {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0})
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in lm.model.llm.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # a trained adapter: without merging, the logits would differ
    lm.model.eval()
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    out = export(lm, tmp_path / "llava", to="hf-llava")
    assert_llava_matches(lm, out)
    after = lm.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def _refused(tmp_path, lm, *needles: str) -> str:
    out = tmp_path / "refused"
    with pytest.raises(ExportError) as err:
        export(lm, out, to="hf-llava")
    assert not out.exists() and not list(tmp_path.glob(".refused*"))  # nothing written
    for needle in needles:
        assert needle in str(err.value)
    return str(err.value)


def test_refusals_name_the_part_and_the_way_out(tmp_path):
    source = tiny_config(("image",)).vision.source
    pooled = OmniLM.from_config(tiny_config(("image",), vision=VisionConfig(source=source, pooling="avg")))
    _refused(tmp_path, pooled, "vision.pooling 'avg'", "average-pooled", "vision.pooling: none",
             "omnilm serve MODEL --engine llama.cpp")
    _refused(tmp_path, tiny_model(("image",), "qformer", connector_options={"num_queries": 4}),
             "connectors.image.type 'qformer'", "Q-Former", "use `mlp`")
    _refused(tmp_path, tiny_model(("image",), "perceiver", connector_options={"num_latents": 4}),
             "connectors.image.type 'perceiver'")
    _refused(tmp_path, tiny_model(("image",), fusion=FusionConfig(mode="gated_xattn", heads=4)),
             "fusion.mode 'gated_xattn'", "Flamingo", "fusion.mode: embed")
    message = _refused(tmp_path, tiny_model(("image", "audio", "video")), "audio (Whisper embed)", "--to hf-ultravox",
                       "video (frames")
    assert message.count("\n  - ") == 2  # every problem at once, one per line
    _refused(tmp_path, tiny_model(("audio",)), "no image path")


def test_registers_with_drop_cls_are_refused(tmp_path):
    vision = VisionConfig(source=_tower(tmp_path, "dinov2_registers"), drop_cls=True)
    lm = OmniLM.from_config(tiny_config(("image",), vision=vision))
    _refused(tmp_path, lm, "4 register tokens", "drops only the CLS token", "vision.drop_cls: false")


def test_unknown_format_lists_the_known_ones(tmp_path):
    with pytest.raises(ExportError, match=r"unknown export format 'onnx'; choose one of \['gguf', 'hf-llava', 'hf-ultravox', 'llama.cpp'\]"):
        export(tiny_model(("image",)), tmp_path / "x", to="onnx")


def test_command_line_exports_and_refuses(tmp_path, capsys):
    from omnilm.cli.main import main

    lm = tiny_model(("image",))
    lm.save(tmp_path / "model")
    assert main(["export", str(tmp_path / "model"), str(tmp_path / "llava"), "--to", "hf-llava"]) == 0
    assert_llava_matches(lm, tmp_path / "llava")
    tiny_model(("image",), "resblock").save(tmp_path / "resblock")
    assert main(["export", str(tmp_path / "resblock"), str(tmp_path / "no"), "--to", "hf-llava", "--check"]) == 2
    assert "connectors.image.type 'resblock'" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "resblock"), str(tmp_path / "no"), "--to", "hf-llava"]) == 2
    assert not (tmp_path / "no").exists()
    assert main(["export", str(tmp_path / "model"), str(tmp_path / "no"), "--to", "hf-llava", "--quant", "Q8_0"]) == 2
    assert "--quant is an option of --to gguf and --to llama.cpp" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "model"), str(tmp_path / "no"), "--to", "llama.cpp", "--check"]) == 2
    assert "ggml-org/llama.cpp#25814" in capsys.readouterr().err  # a CLIP tower: refused, nothing written
    assert not (tmp_path / "no").exists()
