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
