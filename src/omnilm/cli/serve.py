"""`omnilm serve MODEL`: the OpenAI-compatible API and web page on FastAPI + uvicorn."""

from __future__ import annotations

import argparse
import logging

from omnilm.cli.common import add_command, add_engine_flags, fields_from_args, load_model
from omnilm.cli.voice_flags import add_voice_flags, voice_settings_from_args
from omnilm.dual import DualEncoder

logger = logging.getLogger(__name__)

EXAMPLE = """example:
  omnilm serve runs/quickstart/model --port 8000 --api-key secret
  curl http://127.0.0.1:8000/v1/chat/completions -H "Authorization: Bearer secret" \\
       -H "Content-Type: application/json" -d '{"messages": [{"role": "user", "content": "Hello"}]}'

  omnilm serve runs/quickstart/model --asr pkg:whisper-base    # + /v1/audio/transcriptions beside any model
  omnilm serve MODEL --tts piper --tts-voice-file en_US-lessac-medium.onnx   # a neural voice you bring

Open http://127.0.0.1:8000/ for the web page. The key can also come from $OMNILM_API_KEY.
SIGTERM / Ctrl-C stop accepting requests and finish the ones in flight."""


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "serve", run, help="serve a model: OpenAI-compatible API + web page", epilog=EXAMPLE,
        description="Serve MODEL over HTTP: POST /v1/chat/completions (text, image_url, input_audio, video_url "
        "parts; streaming), GET /v1/models, GET /health, and a chat page at /.")
    parser.add_argument("model", help="checkpoint directory, hub id or pkg: reference")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1; 0.0.0.0: all)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (or set OMNILM_API_KEY)")
    parser.add_argument("--model-id", default=None, help="model name reported by /v1/models (default: MODEL)")
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda or cpu (default: cpu)")
    add_engine_flags(parser)
    media = parser.add_argument_group("remote media")
    media.add_argument("--allow-remote-media", action="store_true",
                       help="fetch http(s) media URLs (default off: data URLs only)")
    media.add_argument("--allowed-hosts", nargs="+", default=[], metavar="HOST",
                       help="hosts remote media may come from; private and loopback addresses are always refused")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-body-mb", type=float, default=32.0, help="request body size in MiB (default 32)")
    limits.add_argument("--max-image-pixels", type=int, default=16_000_000, help="pixels per image (default 16e6)")
    limits.add_argument("--max-audio-seconds", type=float, default=30.0, help="seconds per audio clip (default 30)")
    limits.add_argument("--max-video-frames", type=int, default=3000, help="frames per video (default 3000)")
    limits.add_argument("--max-media-items", type=int, default=8, help="media items per request (default 8)")
    limits.add_argument("--max-tokens", type=int, default=1024, help="largest max_tokens allowed (default 1024)")
    limits.add_argument("--timeout", type=float, default=120.0, help="seconds per request, queueing included")
    limits.add_argument("--max-batch-size", type=int, default=16, help="requests generated together (default 16)")
    limits.add_argument("--batching", choices=("continuous", "request"), default="continuous",
                        help="continuous: a request joins the running batch at its next step (default); "
                             "request: each batch runs to its end before the next starts")
    limits.add_argument("--media-cache-mb", type=float, default=256.0,
                        help="MiB of encoded images/clips kept by content hash (default 256; 0: off)")
    add_voice_flags(parser)


def settings_from_args(args: argparse.Namespace):
    """The server's settings from the flags; the two flags named otherwise than their fields are converted."""
    from omnilm.serve import ServeSettings

    return ServeSettings(**fields_from_args(ServeSettings, args), max_body_bytes=int(args.max_body_mb * 2**20),
                         request_timeout=args.timeout)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from omnilm.serve import create_app

    settings = settings_from_args(args)  # invalid limits fail before the model loads
    voice = voice_settings_from_args(args)
    lm = load_model(args)
    if isinstance(lm, DualEncoder):  # a CLIP-style dual encoder: POST /v1/embeddings
        from omnilm.serve.embeddings import create_embedding_app

        app = create_embedding_app(lm, settings)
        logger.info("serving embeddings of %s on http://%s:%d/v1/embeddings", lm.name, args.host, args.port)
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
        return 0
    app = create_app(lm, settings, voice)
    if args.host not in ("127.0.0.1", "localhost", "::1") and settings.api_key is None:
        logger.warning("serving on %s without an API key: anyone who can reach this port can use the model", args.host)
    logger.info("serving %s on http://%s:%d (web page at /, API at /v1)", settings.model_id or lm.name,
                args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=args.timeout)
    return 0
