"""POST /v1/embeddings for a dual encoder, through the official openai client on loopback."""

import base64
import io

import numpy as np
import openai
import pytest

from omnilm.dual import embed_request
from omnilm.dual.testing import tiny_dual
from omnilm.serve.background import BackgroundServer
from omnilm.serve.embeddings import create_embedding_app
from omnilm.serve.settings import ServeSettings


@pytest.fixture(scope="module")
def served():
    dual = tiny_dual()
    app = create_embedding_app(dual, ServeSettings(api_key="k"))
    with BackgroundServer(app) as server:
        yield dual, openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0)


def image_data_url(colour: str) -> str:
    from omnilm.testing import make_shape_image

    buffer = io.BytesIO()
    make_shape_image(colour, 32).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_text_and_image_embeddings_match_the_library(served):
    dual, client = served
    inputs = ["a red circle", image_data_url("red"), "a blue square"]
    response = client.embeddings.create(model="tiny-dual", input=inputs)
    got = np.array([item.embedding for item in response.data])
    expected = np.array(embed_request(dual, inputs))
    assert got.shape == (3, dual.config.projection_dim)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert [item.index for item in response.data] == [0, 1, 2]
    as_floats = client.embeddings.create(model="tiny-dual", input=inputs, encoding_format="float")
    np.testing.assert_allclose(np.array([item.embedding for item in as_floats.data]), got, rtol=1e-6)


def test_bad_inputs_get_4xx_and_the_server_keeps_serving(served):
    _, client = served
    with pytest.raises(openai.BadRequestError, match="base64|image"):
        client.embeddings.create(model="m", input=["data:image/png;base64,@@@"])
    with pytest.raises(openai.BadRequestError, match="at most"):
        client.embeddings.create(model="m", input=["x"] * 300)
    wrong_key = openai.OpenAI(base_url=str(client.base_url), api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong_key.embeddings.create(model="m", input="hi")
    assert len(client.embeddings.create(model="m", input="still here").data) == 1


def test_serve_picks_the_app_from_what_omnilm_load_returns(tmp_path, tiny_lm, monkeypatch):
    """`omnilm serve` of a dual-encoder checkpoint serves embeddings; of an OmniLM checkpoint, chat."""
    import uvicorn

    from omnilm.cli.main import main

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.append(app))
    assert main(["serve", str(tiny_dual().save(tmp_path / "dual"))]) == 0
    assert main(["serve", str(tiny_lm.save(tmp_path / "lm"))]) == 0
    paths = [{route.path for route in app.routes} for app in served]
    assert "/v1/embeddings" in paths[0] and "/v1/chat/completions" not in paths[0]
    assert "/v1/chat/completions" in paths[1] and "/v1/embeddings" not in paths[1]
