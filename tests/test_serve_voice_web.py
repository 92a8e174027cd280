"""The web page's voice mode in headless Chromium with a fake microphone (a WAV file Chromium plays as the mic):
hold to talk, click to talk, the answer's speech played, and the stop button."""

from __future__ import annotations


import pytest

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the Python package)")

from browser import FAKE_MICROPHONE_ARGS, chromium_page

from omnilm.serve import ServeSettings, create_app
from omnilm.serve.background import BackgroundServer

pytestmark = pytest.mark.requires_tool("chromium", "espeak-ng")
KEY = "voice-web-key"


@pytest.fixture(scope="module")
def server(tiny_lm):
    with BackgroundServer(create_app(tiny_lm, ServeSettings(api_key=KEY, default_max_tokens=48))) as running:
        yield running


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory):
    """A spoken question, as the fake microphone's input."""
    from omnilm.speech.encode import encode_audio
    from omnilm.speech.tts import load_engine

    samples, rate = load_engine("espeak").synthesize("What colour is the shape in the picture?", voice="alloy")
    path = tmp_path_factory.mktemp("mic") / "question.wav"
    path.write_bytes(encode_audio(samples, rate, "wav"))
    return path


def test_voice_mode_hold_click_and_stop(server, question_wav, tmp_path):
    microphone = f"--use-file-for-fake-audio-capture={question_wav}"
    with chromium_page(*FAKE_MICROPHONE_ARGS, microphone) as (page, problems):
        page.goto(server.url + "/")
        assert page.locator("#voice-row").is_visible()
        assert page.locator("#voice option").all_inner_texts()[:2] == ["alloy", "ash"]
        page.fill("#key", KEY)
        page.locator("#key").dispatch_event("change")
        page.select_option("#voice", "nova")
        # hold to talk: press, speak for 1.5 s, release
        talk = page.locator("#talk")
        box = talk.bounding_box()
        page.mouse.move(box["x"] + 5, box["y"] + 5)
        page.mouse.down()
        page.wait_for_selector("#talk.recording")
        page.wait_for_timeout(1500)
        page.mouse.up()
        answer = page.locator(".msg.assistant[data-done='true']")
        answer.wait_for(timeout=60_000)
        assert page.locator(".msg.user .meta").inner_text() == "[audio: voice question]"
        assert answer.locator(".text").inner_text().strip(), "the spoken answer has no text"
        page.wait_for_function("() => window.omnilmSpeech.stats.played >= 1", timeout=30_000)
        stats = page.evaluate("window.omnilmSpeech.stats")
        assert stats["chunks"] >= 1
        page.screenshot(path=str(tmp_path / "voice_mode.png"), full_page=True)
        # click to talk (click, then click again), then stop the answer's speech while it plays
        page.evaluate("window.omnilmSpeech.stop()")
        talk.click()
        page.wait_for_selector("#talk.recording")
        page.wait_for_timeout(1200)
        talk.click()
        page.wait_for_function("() => window.omnilmSpeech.stats.played >= 2", timeout=60_000)
        assert page.evaluate("document.body.dataset.speaking") == "true"
        page.click("#stop-speech")
        assert page.evaluate("document.body.dataset.speaking") == "false"
        assert page.evaluate("window.omnilmSpeech.current === null && window.omnilmSpeech.queue.length === 0")
        page.locator(".msg.assistant[data-done='true']").nth(1).wait_for(timeout=60_000)
        assert page.locator(".msg.user").count() == 2 and page.locator(".msg.error").count() == 0
        assert not problems, problems


@pytest.mark.real
def test_voice_mode_transcribes_first_for_a_model_that_does_not_hear(question_wav):
    """A text+image model with `--asr pkg:whisper-base`: the page sends the recording to /v1/audio/transcriptions and
    asks the model the words it heard."""
    from omnilm.serve.voice import VoiceSettings
    from omnilm.testing import tiny_model

    app = create_app(tiny_model(("image",)), ServeSettings(default_max_tokens=16),
                     VoiceSettings(asr="pkg:whisper-base", asr_beams=1))
    microphone = f"--use-file-for-fake-audio-capture={question_wav}"
    with BackgroundServer(app) as server, chromium_page(*FAKE_MICROPHONE_ARGS, microphone) as (page, _):
        page.goto(server.url + "/")
        assert page.locator("#voice-row").is_visible() and not page.locator("#mic").is_visible()
        page.click("#talk")
        page.wait_for_selector("#talk.recording")
        page.wait_for_timeout(3500)  # the whole question (the fake microphone loops the file)
        page.click("#talk")
        page.locator(".msg.assistant[data-done='true']").wait_for(timeout=120_000)
        heard = page.locator(".msg.user .text").inner_text().lower()
        assert "colour" in heard or "color" in heard, heard
        assert page.locator(".msg.error").count() == 0
