"""One config toolkit: every config names the bad field with a ConfigError, from a file, a --set or Python."""

from pathlib import Path

import pytest

from omnilm.config import LLMConfig, OmniConfig
from omnilm.configkit import apply_overrides, read_mapping
from omnilm.errors import ConfigError
from omnilm.training.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(("override", "message"), [
    ("optim.lr=fast", "optim.lr: expected a number, got 'fast'"),
    ("optim.betas=[0.9]", "optim.betas: expected 2 values"),
    ("optim.batch_size=2.5", "optim.batch_size: expected an integer, got 2.5"),
    ("stage.per_connector.image.lr=x", "stage.per_connector.image.lr: expected a number"),
    ("stage.lora.target_modules=5", "stage.lora.target_modules: expected a string or a list"),
    ("seed=[1]", "seed: expected an integer"),
])
def test_training_overrides_name_the_field(override, message):
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_file(CONFIGS / "tiny-image.yaml", [override])
    assert message in str(caught.value) and caught.value.field


def test_yaml_numbers_without_a_dot_are_numbers():
    config = TrainConfig.from_file(CONFIGS / "tiny-image.yaml", ["optim.lr='3e-4'", "stage.llm.lr=1e-5"])
    assert config.optim.lr == 3e-4 and isinstance(config.stage.llm.lr, float)


def test_python_construction_is_checked_too():
    with pytest.raises(ConfigError, match=r"llm\.max_length: expected an integer or null, got 'long'"):
        OmniConfig(llm=LLMConfig(source="x", max_length="long"))
    with pytest.raises(ConfigError, match=r"vision\.pool_size: expected an integer"):
        OmniConfig.from_dict({"llm": {"source": "x"}, "vision": {"source": "v", "pool_size": 2.5}})
    with pytest.raises(ConfigError, match=r"llm: missing field\(s\) \['source'\]"):
        OmniConfig.from_dict({"llm": {}})


def test_files_and_overrides(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        read_mapping(tmp_path / "list.yaml", "training config")
    (tmp_path / "bad.yaml").write_text("a: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_mapping(tmp_path / "bad.yaml", "training config")
    with pytest.raises(ConfigError, match="does not exist"):
        read_mapping(tmp_path / "none.yaml", "training config")
    assert apply_overrides({"a": {"b": 1}}, ["a.c=[1, 2]", "d=null"]) == {"a": {"b": 1, "c": [1, 2]}, "d": None}
    with pytest.raises(ConfigError, match="a.b is not a section"):
        apply_overrides({"a": {"b": 1}}, ["a.b.c=2"])
