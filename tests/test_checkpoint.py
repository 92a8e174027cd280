"""One checkpoint layout for both kinds: a model.safetensors that does not fit its omnilm.json is refused."""

import pytest
from safetensors.torch import load_file, save_file

import omnilm
from omnilm.dual.testing import tiny_dual
from omnilm.errors import OmniError
from omnilm.testing import tiny_model


@pytest.mark.parametrize("build", [lambda: tiny_model(("image",)), tiny_dual], ids=["omni", "dual_encoder"])
def test_weights_that_do_not_fit_the_config_are_refused(build, tmp_path):
    path = build().save(tmp_path / "ckpt")
    assert type(omnilm.load(path)).__name__ in ("OmniLM", "DualEncoder")  # the untouched checkpoint loads
    weights = path / "model.safetensors"
    state = load_file(str(weights))
    dropped = sorted(state)[0]
    save_file({k: v for k, v in state.items() if k != dropped}, str(weights))
    with pytest.raises(OmniError, match=rf"does not match the model built from omnilm\.json.*missing \['{dropped}'\]"):
        omnilm.load(path)
