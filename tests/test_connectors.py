import pytest
import torch

from omnilm.connectors import CONNECTORS, build_connector, connector_tokens
from omnilm.errors import ConfigError

BASIC = ["linear", "mlp", "resblock"]


@pytest.mark.parametrize("name", BASIC)
@pytest.mark.parametrize("length", [1, 7, 50])
def test_shapes_and_gradients(name, length):
    torch.manual_seed(0)
    connector = build_connector(name, in_dim=12, out_dim=20)
    features = torch.randn(3, length, 12)
    out = connector(features)
    assert out.shape == (3, connector_tokens(name, length), 20)
    out.square().mean().backward()
    for pname, param in connector.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, pname


def test_registry_is_exact():
    assert set(BASIC) <= set(CONNECTORS)
    with pytest.raises(ConfigError, match="choose one of"):
        build_connector("MLP", in_dim=1, out_dim=1)
