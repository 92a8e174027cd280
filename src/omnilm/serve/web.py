"""The web page at `/`: a self-contained chat page (no CDN, no build step) that calls the API it sits on.

Gradio was considered: gradio 6.31 installs without torch but pins pillow<13 (this venv has pillow
13.0) and adds a dozen packages, so the page is plain HTML + JavaScript instead. It offers text, image,
audio (file or microphone, converted to 16 kHz WAV in the browser) and video, with streamed answers, and a voice
mode (hold to talk; the answer is spoken sentence by sentence) where the server speaks (`app.state.voice`).
"""

from __future__ import annotations

import html
import json
from importlib import resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse


def render_page(model_id: str, modalities: tuple[str, ...], *, auth_required: bool, voice: dict | None = None) -> str:
    """The page's HTML with the model's name, modalities, whether a key is needed and the voice mode's services
    (`voice`: {"tts": bool, "asr": bool, "voices": [...]}) filled in."""
    template = resources.files("omnilm.serve").joinpath("static/index.html").read_text(encoding="utf-8")
    config = {"model": model_id, "modalities": list(modalities), "authRequired": auth_required,
              "voice": voice or {"tts": False, "asr": False, "voices": []}}
    config_json = json.dumps(config).replace("<", "\\u003c")  # safe inside <script>
    return template.replace("{{TITLE}}", html.escape(model_id)).replace("{{CONFIG_JSON}}", config_json)


def add_web_page(app: FastAPI, lm, model_id: str, *, auth_required: bool) -> None:
    page = render_page(model_id, tuple(lm.modalities), auth_required=auth_required, voice=_voice_config(app))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": "default-src 'self'; img-src 'self' data: "
                                           "blob:; media-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
                                           "script-src 'self' 'unsafe-inline'"})


def _voice_config(app: FastAPI) -> dict | None:
    """What the page's voice mode may use: the server's speech engine and recognizer (see serve.audio.add_voice)."""
    from omnilm.speech.tts import OPENAI_VOICES

    voice = getattr(app.state, "voice", None)
    if voice is None:
        return None
    voices = [v.id for v in voice.engine.voices() if v.id in OPENAI_VOICES] if voice.engine is not None else []
    return {"tts": voice.engine is not None, "asr": voice.recognizer is not None, "voices": voices}
