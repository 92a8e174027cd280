"""Perceiver resampler and Q-Former: fixed token counts for any input length, every modality, gradients."""

import numpy as np
import pytest
import torch
from PIL import Image

from omnilm.config import ConnectorConfig, OmniConfig
from omnilm.connectors import build_connector, connector_options, connector_tokens
from omnilm.errors import ConfigError

ADVANCED = {
    "perceiver": {"num_latents": 5, "depth": 2, "heads": 4},
    "qformer": {"num_queries": 3, "depth": 3, "heads": 4},
}


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))


def _clip(seconds: float, seed: int = 0) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(16_000 * seconds)).astype(np.float32) * 0.1, 16_000)


@pytest.mark.parametrize("name", sorted(ADVANCED))
@pytest.mark.parametrize("length", [1, 7, 50, 333])
def test_fixed_output_count_for_any_length(name, length):
    torch.manual_seed(0)
    options = ADVANCED[name]
    connector = build_connector(name, in_dim=24, out_dim=20, **options)
    out = connector(torch.randn(2, length, 24))  # (B, T, C)
    expected = options.get("num_latents", options.get("num_queries"))
    assert out.shape == (2, expected, 20)
    assert connector_tokens(name, length, **options) == expected


@pytest.mark.parametrize("name", sorted(ADVANCED))
@pytest.mark.parametrize("hidden_dim", [None, 16])
def test_gradients_reach_every_parameter(name, hidden_dim):
    torch.manual_seed(0)
    connector = build_connector(name, in_dim=24, out_dim=20, hidden_dim=hidden_dim, **ADVANCED[name])
    features = torch.randn(2, 9, 24, requires_grad=True)
    connector(features).square().mean().backward()
    for pname, param in connector.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, pname
    assert features.grad.abs().sum() > 0  # the output depends on the media, not only on the learned queries


@pytest.mark.parametrize("name", sorted(ADVANCED))
def test_items_do_not_leak_into_each_other(name):
    torch.manual_seed(0)
    connector = build_connector(name, in_dim=8, out_dim=8, **ADVANCED[name]).eval()
    a, b = torch.randn(1, 6, 8), torch.randn(1, 6, 8)
    together = connector(torch.cat([a, b]))
    torch.testing.assert_close(together[1:], connector(b))


def test_qformer_cross_attention_every_k_layers():
    connector = build_connector("qformer", in_dim=8, out_dim=8, num_queries=2, depth=4, heads=2, cross_every=2)
    assert [layer.cross_attn is not None for layer in connector.layers] == [True, False, True, False]


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("perceiver", {"heads": 5}, "5 heads do not divide the width 24"),
        ("qformer", {"heads": 7}, "7 heads do not divide"),
        ("perceiver", {"num_latents": 0}, "num_latents=0 must be positive"),
        ("qformer", {"cross_every": 0}, "cross_every=0"),
    ],
)
def test_bad_options_are_config_errors(name, options, message):
    with pytest.raises(ConfigError, match=message):
        build_connector(name, in_dim=24, out_dim=20, **options)


def test_unknown_option_is_named_in_config():
    assert connector_options("perceiver") == ("num_latents", "depth", "heads")
    with pytest.raises(ConfigError, match=r"perceiver takes no option\(s\) \['latents'\]; valid: \['num_latents'"):
        ConnectorConfig(type="perceiver", options={"latents": 4}).validate("connectors.image")
    with pytest.raises(ConfigError, match="connectors.image.options"):
        OmniConfig.from_dict({"llm": {"source": "x"}, "vision": {"source": "y"},
                              "connectors": {"image": {"type": "qformer", "options": {"queries": 4}}}})


@pytest.fixture(scope="module", params=sorted(ADVANCED))
def tiny(request):
    from omnilm.testing import tiny_model

    name = request.param
    return name, tiny_model(("image", "audio", "video"), name, connector_options=ADVANCED[name])


def test_every_modality_through_the_model(tiny):
    name, lm = tiny
    options = ADVANCED[name]
    n = options.get("num_latents", options.get("num_queries"))
    layout = lm.processor.layout
    assert layout.image_tokens == layout.video_tokens == n
    frames = [Image.fromarray(np.full((40, 40, 3), 30 * i, np.uint8)) for i in range(4)]
    for seconds in (0.3, 1.0, 2.5):  # several audio lengths: always n tokens
        assert layout.audio_tokens(int(16_000 * seconds)) == n
        inputs = lm.processor("<image> <audio> <video> what?", images=[_image(0)], audios=[_clip(seconds)],
                              videos=[frames])
        for modality in ("image", "audio", "video"):
            assert int((inputs["input_ids"] == lm.processor.placeholder_ids[modality]).sum()) == n
        media = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        features = lm.model.encode_media(**media)
        assert {m: tuple(torch.cat(f).shape) for m, f in features.items()} == {m: (n, 32) for m in ("image", "audio", "video")}
        logits = lm.model(**inputs).logits
        assert logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(logits).all()


def test_two_audio_clips_of_different_lengths(tiny):
    name, lm = tiny
    inputs = lm.processor("<audio> and <audio>", audios=[_clip(0.4), _clip(1.7, seed=1)])
    assert lm.model(**inputs).logits.shape[1] == inputs["input_ids"].shape[1]


def test_model_gradients_reach_every_connector_parameter(tiny):
    name, lm = tiny
    model = lm.model.train()
    inputs = lm.processor(
        [[{"role": "user", "content": [{"type": "image", "image": _image(1)}, {"type": "audio", "audio": _clip(0.5)},
                                        {"type": "text", "text": "what color?"}]},
          {"role": "assistant", "content": "red"}]],
        return_labels=True,
    )
    model.zero_grad()
    model(**inputs).loss.backward()
    for pname, param in model.connectors.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, pname
    assert all(p.grad is None for p in model.vision.parameters())  # frozen encoder: no graph built
    model.eval()
