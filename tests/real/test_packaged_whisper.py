"""pkg:whisper-base, converted from CTranslate2, transcribes espeak-ng speech."""

import re
import subprocess
import wave

import numpy as np
import pytest
import torch

from omnilm.packaged import resolve

pytestmark = [pytest.mark.real, pytest.mark.requires_tool("espeak-ng")]

SENTENCE = "I would like a cup of coffee with milk, please."


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


@pytest.fixture(scope="module")
def whisper():
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    path = resolve("pkg:whisper-base")
    return WhisperProcessor.from_pretrained(path), WhisperForConditionalGeneration.from_pretrained(path).eval()


@pytest.fixture(scope="module")
def speech_clip(tmp_path_factory):
    from scipy.signal import resample_poly

    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "130", "-w", str(path), SENTENCE], check=True)
    with wave.open(str(path)) as clip:
        rate = clip.getframerate()
        samples = np.frombuffer(clip.readframes(clip.getnframes()), np.int16).astype(np.float32) / 32768
    return resample_poly(samples, 16_000, rate).astype(np.float32)  # espeak-ng: 22.05 kHz; Whisper: 16 kHz


@pytest.fixture(scope="module")
def features(whisper, speech_clip):
    processor, _ = whisper
    return processor(speech_clip, sampling_rate=16_000, return_tensors="pt").input_features  # (1, 80, 3000)


def test_transcribes_espeak_speech(whisper, features):
    processor, model = whisper
    ids = model.generate(features, max_new_tokens=40)  # language detected, task from generation config
    text = processor.batch_decode(ids, skip_special_tokens=True)[0]
    assert _words(text) == _words(SENTENCE), text


def test_encoder_gives_one_frame_per_20_ms(whisper, features):
    _, model = whisper
    with torch.no_grad():
        hidden = model.get_encoder()(features).last_hidden_state
    assert hidden.shape == (1, 1500, 512)
    assert torch.isfinite(hidden).all()


def test_transcriber_with_a_prompt_returns_only_the_speech(whisper, speech_clip):
    from omnilm.encoders.audio import WhisperTranscriber

    processor, model = whisper
    prompt = "A customer orders at a cafe."
    transcriber = WhisperTranscriber(model, processor.feature_extractor, processor.tokenizer, prompt=prompt)
    texts = transcriber.transcribe([speech_clip, speech_clip[: len(speech_clip) // 2]])  # one batch of two
    assert _words(texts[0]) == _words(SENTENCE), texts[0]
    assert len(texts) == 2 and not any("cafe" in _words(t) for t in texts)
