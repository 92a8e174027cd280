"""Voice with the packaged Whisper (`--asr pkg:whisper-base` beside a tiny model), through the official client:
every transcription format, translations, 30 s windows, bad uploads, and the speech → transcription round trip."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
import soundfile

openai = pytest.importorskip("openai")

from omnilm.metrics.wer import wer
from omnilm.serve import ServeSettings, create_app
from omnilm.serve.background import BackgroundServer
from omnilm.serve.voice import VoiceSettings

pytestmark = [pytest.mark.real, pytest.mark.requires_tool("espeak-ng")]
KEY = "voice-key"
# the round trip's sentences: everyday words, numbers, a question, names (espeak voice → Whisper base)
SENTENCES = [
    "The weather is nice today, so we will walk to the park.",
    "Please send me the report before the meeting on Friday.",
    "How many apples are left in the basket?",
    "My brother bought a new car last week.",
    "The train to London leaves at 7 in the morning.",  # a digit: omnilm's WER normaliser keeps "seven" != "7"
    "She reads a book every night before she goes to sleep.",
    "Turn left at the next corner and the shop is on your right.",
    "We need more coffee, milk and bread from the store.",
]


@pytest.fixture(scope="module")
def server(tiny_lm):
    settings = ServeSettings(api_key=KEY, max_body_bytes=4 * 2**20)
    voice = VoiceSettings(asr="pkg:whisper-base", max_upload_bytes=2 * 2**20, max_transcribe_seconds=90)
    with BackgroundServer(create_app(tiny_lm, settings, voice)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def spoken(client) -> bytes:
    return client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCES[0], response_format="wav").content


def test_round_trip_speech_to_text_keeps_the_words(client):
    heard = []
    for sentence in SENTENCES:
        audio = client.audio.speech.create(model="tts-1", voice="alloy", input=sentence, response_format="mp3")
        heard.append(client.audio.transcriptions.create(model="whisper-1", file=("s.mp3", audio.content),
                                                        language="en").text)
    error = wer(heard, SENTENCES)
    print(f"round-trip WER over {len(SENTENCES)} sentences: {error:.3f}")
    for said, got in zip(SENTENCES, heard, strict=True):
        print(f"  {said!r} -> {got!r}")
    assert error <= 0.10


def test_each_response_format(client, spoken):
    upload = ("question.wav", spoken)
    text = client.audio.transcriptions.create(model="whisper-1", file=upload).text
    assert wer(text, SENTENCES[0]) <= 0.2
    plain = client.audio.transcriptions.create(model="whisper-1", file=upload, response_format="text")
    assert plain.strip() == text
    srt = client.audio.transcriptions.create(model="whisper-1", file=upload, response_format="srt")
    assert srt.startswith("1\n00:00:0") and " --> " in srt and "," in srt.splitlines()[1]
    vtt = client.audio.transcriptions.create(model="whisper-1", file=upload, response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:0") and "." in vtt.splitlines()[2]
    verbose = client.audio.transcriptions.create(model="whisper-1", file=upload, response_format="verbose_json",
                                                 timestamp_granularities=["segment"])
    assert verbose.language == "english" and verbose.text == text
    assert verbose.duration == pytest.approx(len(soundfile.read(io.BytesIO(spoken))[0]) / 24_000, abs=0.05)
    assert verbose.segments and 0 <= verbose.segments[0].start < verbose.segments[-1].end <= verbose.duration + 0.1


def test_long_audio_keeps_its_timestamps_across_windows(client, spoken):
    speech, rate = soundfile.read(io.BytesIO(spoken), dtype="float32")
    gap = np.zeros(int(rate * 33.0), np.float32)  # the second sentence starts after Whisper's first 30 s window
    second = client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCES[4], response_format="wav")
    later, _ = soundfile.read(io.BytesIO(second.content), dtype="float32")
    starts_at = (speech.size + gap.size) / rate
    buffer = io.BytesIO()
    soundfile.write(buffer, np.concatenate([speech, gap, later]), rate, format="FLAC")
    verbose = client.audio.transcriptions.create(model="whisper-1", file=("long.flac", buffer.getvalue()),
                                                 response_format="verbose_json")
    assert wer(verbose.text, f"{SENTENCES[0]} {SENTENCES[4]}") <= 0.2
    train = next(s for s in verbose.segments if "train" in s.text.lower())
    assert train.start == pytest.approx(starts_at, abs=1.0) and train.end <= verbose.duration + 0.1
    assert verbose.segments[0].end < starts_at


def test_translation_to_english(client):
    french = client.audio.speech.create(model="tts-1", voice="fr-fr", response_format="wav",
                                        input="Bonjour, je suis très content de vous voir.")
    heard = client.audio.transcriptions.create(model="whisper-1", file=("fr.wav", french.content))
    assert "bonjour" in heard.text.lower()  # transcribed in French, the language detected
    english = client.audio.translations.create(model="whisper-1", file=("fr.wav", french.content))
    assert "happy to see you" in english.text.lower(), english.text
    srt = client.audio.translations.create(model="whisper-1", file=("fr.wav", french.content), response_format="srt")
    assert srt.startswith("1\n") and "happy" in srt.lower()


def test_bad_uploads_are_4xx_and_the_server_keeps_serving(server, client, spoken):
    cases = [
        (("notes.txt", b"this is not audio at all"), {}, 400, "not a readable audio file"),
        (("empty.wav", b""), {}, 400, "is empty"),
        (("big.wav", b"\0" * (2 * 2**20 + 10)), {}, 413, "over this server's limit of 2 MiB"),
        (("a.wav", spoken), {"response_format": "docx"}, 400, "unknown response_format 'docx'"),
        (("a.wav", spoken), {"language": "klingon"}, 400, "language 'klingon'"),
        (("a.wav", spoken), {"timestamp_granularities": ["word"]}, 400,
         "word timestamps come only with response_format verbose_json"),
    ]
    rate = 8_000
    long = io.BytesIO()
    soundfile.write(long, np.zeros(rate * 95, np.float32), rate, format="FLAC", subtype="PCM_16")  # 95 s of silence
    cases.append((("long.flac", long.getvalue()), {}, 400, "over the limit of 90.0 s"))
    for upload, options, status, message in cases:
        with pytest.raises(openai.APIStatusError) as err:
            client.audio.transcriptions.create(model="whisper-1", file=upload, **options)
        assert err.value.status_code == status and message in err.value.body["message"], err.value.body
    missing = httpx.post(server.url + "/v1/audio/transcriptions", data={"model": "whisper-1"},
                         headers={"Authorization": f"Bearer {KEY}"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "file"
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    assert client.audio.transcriptions.create(model="whisper-1", file=("ok.wav", spoken)).text
