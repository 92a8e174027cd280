"""`POST /v1/embeddings` for dual-encoder checkpoints (CLIP-style): texts and images in one space."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from omnilm.errors import OmniError
from omnilm.serve.app import api_app
from omnilm.serve.errors import APIError
from omnilm.serve.settings import ServeSettings

MAX_INPUTS = 256  # items per request


class EmbeddingRequest(BaseModel):
    input: str | list[Any]  # texts, image data URLs, or {"text"|"image"|"image_url"} items
    model: str | None = None
    encoding_format: str = "float"


def create_embedding_app(dual, settings: ServeSettings | None = None) -> FastAPI:
    """An app serving a dual encoder's embeddings (no chat: a dual encoder does not generate)."""
    from omnilm.dual import embed_request

    settings = settings or ServeSettings()
    model_id = settings.model_id or dual.name
    app, auth = api_app(settings, title="omnilm embeddings", model_id=model_id, modalities=("image",))

    @app.post("/v1/embeddings", dependencies=auth)
    async def embeddings(body: EmbeddingRequest) -> dict:
        if body.encoding_format not in ("float", "base64"):
            raise APIError(400, "encoding_format must be 'float' or 'base64'", param="encoding_format")
        count = 1 if isinstance(body.input, str) else len(body.input)
        if count > MAX_INPUTS:
            raise APIError(400, f"{count} inputs in one request; send at most {MAX_INPUTS}", param="input")
        try:
            vectors = await run_in_threadpool(embed_request, dual, body.input)
        except OmniError as err:
            raise APIError(400, str(err), param="input") from None
        encode = _base64 if body.encoding_format == "base64" else (lambda v: v)
        data = [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)]
        return {"object": "list", "data": data, "model": model_id, "usage": {"prompt_tokens": 0, "total_tokens": 0}}

    return app


def _base64(vector: list[float]) -> str:
    """OpenAI's base64 encoding: the little-endian float32 bytes of the vector."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
