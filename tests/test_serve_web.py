"""The web page at `/`, driven in headless Chromium: upload an image, ask, watch the answer stream in."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from PIL import Image

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the Python package)")

from browser import chromium_page

from omnilm.serve import ServeSettings, create_app  # noqa: E402
from omnilm.serve.background import BackgroundServer  # noqa: E402

KEY = "web-key"


@pytest.fixture(scope="module")
def server(tiny_lm):
    lm = tiny_lm
    settings = ServeSettings(api_key=KEY, default_max_tokens=24)
    with BackgroundServer(create_app(lm, settings)) as running:
        yield running


def test_page_names_the_model_and_needs_no_key(server):
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '"model": "tiny"' in page.text and '"authRequired": true' in page.text
    assert "https://" not in page.text  # self-contained: no CDN


@pytest.mark.requires_tool("chromium")
def test_upload_image_ask_and_see_the_streamed_answer(server, tmp_path):
    picture = tmp_path / "red.png"
    Image.new("RGB", (48, 48), "red").save(picture)
    with chromium_page() as (page, problems):
        page.goto(server.url + "/")
        assert page.locator("#model-name").inner_text() == "tiny"
        assert page.locator("#modalities .badge").all_inner_texts() == ["text", "image", "audio", "video"]
        page.fill("#key", KEY)
        page.locator("#key").dispatch_event("change")
        page.set_input_files("#image-input", str(picture))
        page.wait_for_selector("#attachments span:has-text('red.png')")
        # count how many times the answer's text changes while it streams
        page.evaluate("""() => { window.updates = 0; new MutationObserver(() => window.updates++)
            .observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true}); }""")
        page.fill("#prompt", "What colour is the shape?")
        page.click("#send")
        answer = page.locator(".msg.assistant[data-done='true']")
        answer.wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "web_chat.png"), full_page=True)
        assert page.locator(".msg.user img").count() == 1
        assert page.locator(".msg.user .text").inner_text() == "What colour is the shape?"
        text = answer.locator(".text").inner_text()
        meta = answer.locator(".meta").inner_text()
        assert text.strip(), "the answer is empty"
        assert "completion tokens" in meta, meta
        assert page.evaluate("window.updates") >= 3, "the answer arrived in one piece, not streamed"
        # second turn: an audio file, converted to 16 kHz WAV in the browser, in the same conversation
        page.set_input_files("#audio-input", str(_tone(tmp_path / "tone.ogg")))
        page.wait_for_selector("#attachments span:has-text('tone.ogg')")
        page.fill("#prompt", "And what do you hear?")
        page.press("#prompt", "Enter")
        page.locator(".msg.assistant[data-done='true']").nth(1).wait_for(timeout=60_000)
        assert page.locator(".msg.error").count() == 0, page.locator(".msg.error").all_inner_texts()
        assert not problems, problems
    assert (tmp_path / "web_chat.png").stat().st_size > 1000
    print(f"screenshot: {tmp_path / 'web_chat.png'}")


def _tone(path: Path) -> Path:
    import numpy as np
    import soundfile

    t = np.arange(22_050) / 22_050
    soundfile.write(path, 0.3 * np.sin(2 * np.pi * 330 * t), 22_050, format="OGG")
    return path
