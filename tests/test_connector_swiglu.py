"""The Ultravox-style `swiglu` connector: layout, the SwiGLU's gate half, gradients, audio token counts end to end."""

import math

import numpy as np
import pytest
import torch

from omnilm.config import AudioConfig, ConnectorConfig
from omnilm.connectors import build_connector, connector_tokens
from omnilm.errors import ConfigError


def _rms(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * weight


@pytest.mark.parametrize("length", [1, 7, 50])
def test_shapes_and_gradients(length):
    torch.manual_seed(0)
    connector = build_connector("swiglu", in_dim=24, out_dim=20, hidden_dim=16)
    out = connector(torch.randn(3, length, 24))
    assert out.shape == (3, connector_tokens("swiglu", length), 20) == (3, length, 20)
    out.square().mean().backward()
    for name, param in connector.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_parameter_names_are_ultravox_projector_names():
    connector = build_connector("swiglu", in_dim=24, out_dim=20, hidden_dim=16)
    shapes = {name: tuple(p.shape) for name, p in connector.state_dict().items()}
    assert shapes == {"ln_pre.weight": (24,), "linear_1.weight": (16, 24), "ln_mid.weight": (8,),
                      "linear_2.weight": (20, 8)}


def test_the_second_half_gates_the_first():
    torch.manual_seed(1)
    connector = build_connector("swiglu", in_dim=12, out_dim=10, hidden_dim=8)
    with torch.no_grad():
        for norm in (connector.ln_pre, connector.ln_mid):
            norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 5, 12)
    h = _rms(x, connector.ln_pre.weight) @ connector.linear_1.weight.T  # (2, 5, 8)
    expected = _rms(h[..., :4] * torch.nn.functional.silu(h[..., 4:]), connector.ln_mid.weight)
    expected = expected @ connector.linear_2.weight.T
    torch.testing.assert_close(connector(x), expected)
    swapped = _rms(torch.nn.functional.silu(h[..., :4]) * h[..., 4:], connector.ln_mid.weight) @ connector.linear_2.weight.T
    assert not torch.allclose(connector(x), swapped, atol=1e-4)


def test_odd_hidden_width_is_refused():
    with pytest.raises(ConfigError, match="must be even") as err:
        ConnectorConfig(type="swiglu", hidden_dim=15).validate("connectors.audio")
    assert err.value.field == "connectors.audio.hidden_dim"
    with pytest.raises(ConfigError, match="must be even"):
        build_connector("swiglu", in_dim=4, out_dim=7)


@pytest.mark.parametrize("stack", [1, 4, 8])
def test_audio_token_counts_end_to_end(stack):
    from omnilm.lm import OmniLM
    from omnilm.testing import tiny_config, tiny_parts

    audio = AudioConfig(source=tiny_parts()["audio"], stack_factor=stack)
    lm = OmniLM.from_config(tiny_config(("audio",), "swiglu", audio=audio), name="tiny")
    assert lm.model.connectors["audio"].ln_pre.weight.shape == (32 * stack,)  # k stacked Whisper frames
    rng = np.random.default_rng(0)
    for seconds in (0.05, 0.37, 1.0, 2.31):
        samples = int(16_000 * seconds)
        expected = math.ceil(samples / (160 * 2 * stack))  # 100 mel frames/s, conv stride 2, k frames per token
        assert lm.processor.layout.audio_tokens(samples) == expected
        clip = (rng.standard_normal(samples).astype(np.float32) * 0.1, 16_000)
        inputs = lm.processor("<audio> what was said?", audios=[clip])
        assert int((inputs["input_ids"] == lm.processor.placeholder_ids["audio"]).sum()) == expected
        media = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        (features,) = lm.model.encode_media(**media)["audio"]
        assert features.shape == (expected, 32)
        assert lm.model(**inputs).logits.shape[1] == inputs["input_ids"].shape[1]


def test_model_gradients_reach_the_connector():
    from omnilm.testing import tiny_model

    lm = tiny_model(("audio",), "swiglu")
    model = lm.model.train()
    clip = (np.random.default_rng(2).standard_normal(12_000).astype(np.float32) * 0.1, 16_000)
    inputs = lm.processor([[{"role": "user", "content": [{"type": "audio", "audio": clip}]},
                            {"role": "assistant", "content": "red"}]], return_labels=True)
    model(**inputs).loss.backward()
    for name, param in model.connectors.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.audio.parameters())
    model.eval()
