import pytest

from omnilm.config import ConnectorConfig, LLMConfig, OmniConfig, VideoConfig, VisionConfig
from omnilm.errors import ConfigError


def full_config() -> OmniConfig:
    return OmniConfig(
        llm={"source": "some/llm"},
        vision={"source": "some/vit", "pooling": "avg", "pool_size": 2},
        audio={"source": "some/whisper", "stack_factor": 4},
        video={"num_frames": 8, "temporal_pool": 2},
        connectors={"image": {"type": "resblock"}, "audio": {"type": "linear"}},
    )


def test_json_and_yaml_round_trip(tmp_path):
    cfg = full_config()
    for suffix, text in ((".json", cfg.to_json()), (".yaml", cfg.to_yaml())):
        path = tmp_path / f"cfg{suffix}"
        path.write_text(text)
        assert OmniConfig.from_file(path) == cfg


def test_defaults_fill_missing_connectors():
    cfg = OmniConfig(llm=LLMConfig("x"), vision=VisionConfig("v"), video=VideoConfig())
    assert cfg.modalities == ("image", "video")
    assert cfg.connectors["image"].type == "mlp"
    assert cfg.connector_for("video") == "image"  # video shares the image connector by default


@pytest.mark.parametrize(
    "change, field",
    [
        ({"vision": {"source": "v", "pooling": "max"}}, "vision.pooling"),
        ({"connectors": {"image": {"type": "nope"}}, "vision": {"source": "v"}}, "connectors.image.type"),
        ({"video": {"num_frames": 8}}, "video"),
        ({"audio": {"source": "a", "mode": "sing"}}, "audio.mode"),
        ({"audio": {"source": "a", "max_seconds": 60}}, "audio.max_seconds"),
        ({"audio": {"source": "a", "mode": "transcribe", "transcribe_beams": 0}}, "audio.transcribe_beams"),
        ({"llm": {"source": "x", "dtype": "int3"}}, "llm.dtype"),
        ({"llm": {"source": "x", "colour": 1}}, "llm"),
        ({"connectors": {"audio": {"type": "mlp"}}}, "connectors.audio"),
    ],
)
def test_bad_fields_are_named(change, field):
    data = {"llm": {"source": "x"}, **change}
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        OmniConfig.from_dict(data)


def test_unknown_connector_lists_valid_names():
    with pytest.raises(ConfigError, match="linear"):
        ConnectorConfig(type="banana").validate("connectors.image")


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_is_bfloat16_only_where_the_machine_computes_it_natively(monkeypatch, native):
    import torch

    from omnilm import config

    monkeypatch.setattr(config, "native_bfloat16", lambda: native)
    assert config.torch_dtype("auto") is (torch.bfloat16 if native else torch.float32)
    assert config.torch_dtype("float32") is torch.float32
    LLMConfig(source="x", dtype="auto").validate()


def test_bfloat16_where_it_is_emulated_works_with_one_warning(monkeypatch, caplog):
    import torch

    from omnilm import config

    monkeypatch.setattr(config, "native_bfloat16", lambda: False)
    config._warn_emulated_bfloat16.cache_clear()
    with caplog.at_level("WARNING", logger="omnilm.config"):
        assert config.torch_dtype("bfloat16") is torch.bfloat16
        assert config.torch_dtype("bfloat16") is torch.bfloat16
    assert [r.message.count("dtype: auto") for r in caplog.records] == [1]  # said once, with the way out
    monkeypatch.setattr(config, "native_bfloat16", lambda: True)
    config._warn_emulated_bfloat16.cache_clear()
    caplog.clear()
    config.torch_dtype("bfloat16")
    assert not caplog.records


def test_the_loaded_llm_dtype_is_named_as_a_config_dtype(tiny_lm):
    import torch

    from omnilm.config import DTYPES, dtype_name
    from omnilm.export.weights import llm_dtype_name

    assert llm_dtype_name(tiny_lm) == "float32"
    assert [dtype_name(d) for d in (torch.float32, torch.bfloat16, torch.float16)] == ["float32", "bfloat16", "float16"]
    assert all(dtype_name(getattr(torch, name)) == name for name in DTYPES if name != "auto")
