"""The seeds' recipes: each validates offline, a bad one fails before any download, each builds in miniature."""

import dataclasses
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from omnilm.cli.main import main
from omnilm.config import LLMConfig, OmniConfig
from omnilm.errors import ConfigError
from omnilm.preflight import preflight

RECIPES = Path(__file__).resolve().parents[1] / "configs" / "recipes"
NAMES = ["llava-1.5", "blip2-opt", "minigpt4", "flamingo", "capstone-phi2"]
SEED_SHAPE = {  # what each seed is made of: (connector, fusion mode, modalities)
    "llava-1.5": ("mlp", "embed", ("image",)),
    "blip2-opt": ("qformer", "embed", ("image",)),
    "minigpt4": ("qformer", "embed", ("image",)),
    "flamingo": ("perceiver", "gated_xattn", ("image", "video")),
    "capstone-phi2": ("resblock", "embed", ("image", "audio")),
}


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Any attempt to fetch from the hub fails the test."""
    import huggingface_hub
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError(f"tried to download {args[:1]}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    for cls in (transformers.AutoConfig, transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        original = cls.from_pretrained.__func__

        def guarded(klass, source, *args, _original=original, **kwargs):
            if not Path(str(source)).is_dir():
                refuse(source)
            return _original(klass, source, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(guarded))


def test_every_recipe_is_there():
    assert sorted(p.stem for p in RECIPES.glob("*.yaml")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_recipe_validates_offline(name, capsys):
    cfg = OmniConfig.from_file(RECIPES / f"{name}.yaml")
    connector, fusion, modalities = SEED_SHAPE[name]
    assert cfg.connectors["image"].type == connector and cfg.fusion.mode == fusion and cfg.modalities == modalities
    assert "/" in cfg.llm.source and "/" in cfg.vision.source  # real hub parts
    lines = preflight(cfg)
    assert any(line.startswith("connectors.image") and "→" in line for line in lines)
    assert main(["new", str(RECIPES / f"{name}.yaml"), "unused-out", "--dry-run"]) == 0
    assert "valid" in capsys.readouterr().out
    assert not Path("unused-out").exists()


def _write(tmp_path, recipe: str, edit) -> Path:
    data = yaml.safe_load((RECIPES / f"{recipe}.yaml").read_text())
    edit(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


BAD = {
    "unknown connector": ("llava-1.5", lambda d: d["connectors"]["image"].update(type="perciever"),
                          "unknown connector 'perciever'; choose one of"),
    "unknown option": ("flamingo", lambda d: d["connectors"]["image"]["options"].update(latents=8),
                       "valid: \\['num_latents'"),
    "unknown packaged part": ("llava-1.5", lambda d: d["llm"].update(source="pkg:vicuna"),
                              "Unknown packaged model 'pkg:vicuna'"),
    "missing local part": ("llava-1.5", lambda d: d["vision"].update(source="./no/such/dir"),
                           "neither an existing directory"),
    "part of the wrong kind": ("capstone-phi2", lambda d: d["llm"].update(source="openai/clip-vit-base-patch32"),
                               "is a vision model, not a causal LLM"),
    "heads vs LLM width": ("flamingo", lambda d: d["fusion"].update(heads=12),
                           "12 heads do not divide the LLM width 2560"),
    "heads vs connector width": ("blip2-opt", lambda d: d["connectors"]["image"]["options"].update(heads=10),
                                 "10 heads do not divide the width 768"),
    "pixel shuffle vs patch grid": ("llava-1.5", lambda d: d["vision"].update(pooling="pixel_shuffle", pool_size=5),
                                    "patch grid \\(24\\) divisible by 5"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_recipe_fails_before_any_download(case, tmp_path, capsys, monkeypatch):
    recipe, edit, message = BAD[case]
    path = _write(tmp_path, recipe, edit)
    import omnilm.lm

    monkeypatch.setattr(omnilm.lm.OmniLM, "from_config", lambda *a, **k: pytest.fail("got past validation"))
    for extra in (["--dry-run"], []):
        assert main(["new", str(path), str(tmp_path / "out"), *extra]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) <= 4 and re.search(message, err), err


def test_local_parts_are_read_from_their_config(tmp_path):
    from omnilm.testing import tiny_config

    cfg = tiny_config(("image",), "perceiver", connector_options={"heads": 4})
    assert "connectors.image: perceiver 32 → 32" in preflight(cfg)
    bad = tiny_config(("image",), "perceiver", connector_options={"heads": 5})
    with pytest.raises(ConfigError, match="5 heads do not divide the width 32"):
        preflight(bad)


# Each recipe's shape, built with tiny stand-in parts ---------------------------------------------------
def _shrink(cfg: OmniConfig) -> dict:
    """The recipe with tiny parts: same connectors, options, fusion and pooling; widths and depths tiny."""
    from omnilm.testing import tiny_parts

    parts = tiny_parts()
    connectors = {}
    for key, c in cfg.connectors.items():
        options = {k: (4 if k == "heads" else min(v, 2) if k == "depth" else v) for k, v in c.options.items()}
        connectors[key] = dataclasses.replace(c, hidden_dim=None, options=options)
    sections = {
        "llm": LLMConfig(source=parts["llm"]),
        "vision": dataclasses.replace(cfg.vision, source=parts["vision"], dtype="float32"),
        "connectors": connectors,
        "fusion": dataclasses.replace(cfg.fusion, heads=4),
        "video": cfg.video and dataclasses.replace(cfg.video, num_frames=2),
    }
    if cfg.audio is not None:
        audio = Path(parts["audio"]).parent / "audio-with-tokenizer"  # transcribe mode needs Whisper's tokenizer
        if not audio.is_dir():
            shutil.copytree(parts["audio"], audio)
            shutil.copy2(Path(parts["llm"]) / "tokenizer.json", audio)
            shutil.copy2(Path(parts["llm"]) / "tokenizer_config.json", audio)
        sections["audio"] = dataclasses.replace(cfg.audio, source=str(audio))
    return sections


@pytest.mark.parametrize("name", NAMES)
def test_recipe_shape_builds_with_tiny_parts(name):
    from omnilm.testing import tiny_config, tiny_model

    cfg = OmniConfig.from_file(RECIPES / f"{name}.yaml")
    sections = _shrink(cfg)
    modalities = cfg.modalities
    lm = tiny_model(modalities, **sections)
    tiny = tiny_config(modalities, **sections)
    assert tiny.fusion.mode == cfg.fusion.mode and tiny.connectors["image"].type == cfg.connectors["image"].type
    options = cfg.connectors["image"].options
    expected = 1 if cfg.fusion.mode == "gated_xattn" else options.get("num_latents", options.get("num_queries", 16))
    assert lm.processor.layout.image_tokens == expected
    assert (lm.model.fusion is not None) == (cfg.fusion.mode == "gated_xattn")
    assert (lm.processor.transcriber is not None) == (cfg.audio is not None and cfg.audio.mode == "transcribe")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    inputs = lm.processor("<image> what shape?", images=[image])
    logits = lm.model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(logits).all()
    assert isinstance(lm.generate("<image> what shape?", images=[image], max_new_tokens=3), str)
