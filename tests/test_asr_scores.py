"""Whisper's scores and word times on /v1/audio/transcriptions: `avg_logprob` and `no_speech_prob` checked against a
teacher-forced forward, word timestamps through the official `openai` client (a tiny random Whisper with a
Whisper-layout vocabulary; one real-weights test with pkg:whisper-base at the end)."""

from __future__ import annotations

import io
import re
import types

import numpy as np
import pytest
import torch

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from omnilm.errors import OmniError
from omnilm.speech.asr import Recognizer, speech_windows

RATE = 16_000
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
INIT = ["<|startoftranscript|>", "<|en|>", "<|transcribe|>"]  # what Whisper decodes after (no prompt)


def _byte_symbols() -> dict[int, str]:
    """GPT-2's byte → printable symbol map, which byte-level BPE vocabularies (Whisper's too) are written in."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    moved = [b for b in range(256) if b not in kept]
    return {**{b: chr(b) for b in kept}, **{b: chr(256 + i) for i, b in enumerate(moved)}}


def tiny_whisper(path):
    """A random Whisper laid out like OpenAI's: 256 bytes and " a"…" z", then <|endoftext|> and the other special
    tokens, then 1501 timestamps. Its output projection is scaled up so that it writes varied text, spaces
    included; text is printable ASCII (the rest is suppressed, as Whisper suppresses its non-speech tokens)."""
    import transformers

    symbols = _byte_symbols()
    vocab = {symbols[b]: b for b in range(256)}
    merges = [(symbols[32], letter) for letter in "abcdefghijklmnopqrstuvwxyz"]
    vocab |= {a + b: 256 + i for i, (a, b) in enumerate(merges)}
    tokenizer = transformers.WhisperTokenizer(vocab=vocab, merges=merges)
    tokenizer.add_tokens(SPECIALS, special_tokens=True)
    tokenizer.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(1501)])
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIALS}
    eos = ids["<|endoftext|>"]
    torch.manual_seed(1)
    config = transformers.WhisperConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80, max_source_positions=1500,
        max_target_positions=128, tie_word_embeddings=False, pad_token_id=eos, bos_token_id=eos, eos_token_id=eos,
        decoder_start_token_id=ids["<|startoftranscript|>"])
    whisper = transformers.WhisperForConditionalGeneration(config)
    with torch.no_grad():
        whisper.proj_out.weight[: eos + 1] *= 40  # text and end of text, not the timestamps
    text = {*range(33, 127), *range(256, 256 + len(merges))}
    whisper.generation_config = transformers.GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
        max_length=128, no_timestamps_token_id=ids["<|notimestamps|>"], prev_sot_token_id=ids["<|startofprev|>"],
        is_multilingual=True, lang_to_id={"<|en|>": ids["<|en|>"], "<|de|>": ids["<|de|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        alignment_heads=[[0, 1], [1, 2]], max_initial_timestamp_index=50,
        suppress_tokens=[b for b in range(256) if b not in text] + [ids[t] for t in SPECIALS[4:9]],
        begin_suppress_tokens=[32, eos])
    whisper.save_pretrained(path)
    tokenizer.save_pretrained(path)
    transformers.WhisperFeatureExtractor(feature_size=80).save_pretrained(path)
    return path


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.float32)


def sound(seconds: float) -> np.ndarray:
    """A tone whose loudness swells twice a second (speech-like energy)."""
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * 300 * t) * (1 + np.sin(2 * np.pi * 2 * t))).astype(np.float32)


def wav(samples: np.ndarray) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, samples, RATE, format="WAV")
    return buffer.getvalue()


# two windows, 0.2–25.22 s and 30.2–40.5 s: a long clip and a short one, whose decodings differ in length
TWO_WINDOWS = np.concatenate([silence(0.5), sound(20), silence(10), sound(9), silence(1)])
# two identical windows, 0.2–25.22 s and 30.2–55.22 s: the second decodes as the first, 30 s later
TWIN_WINDOWS = np.concatenate([silence(0.5), sound(20), silence(10), sound(20), silence(10)])


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    return tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"))


@pytest.fixture(scope="module")
def parts(whisper_dir):
    from omnilm.encoders.audio import load_whisper

    return load_whisper(str(whisper_dir), "float32")  # (whisper, feature extractor, tokenizer)


def teacher_forced(parts, clip, decoder_input: list[int], tokens: list[int]) -> tuple[float, float]:
    """By hand, from one forward over `decoder_input + tokens`: the tokens' mean log-probability under Whisper's
    filters (its suppressions and timestamp rules, in generate's order), and p(<|nospeech|>) after
    <|startoftranscript|>."""
    from transformers.generation.logits_process import (SuppressTokensAtBeginLogitsProcessor,
                                                        SuppressTokensLogitsProcessor, WhisperTimeStampLogitsProcessor)

    whisper, extractor, tokenizer = parts
    config, begin = whisper.generation_config, len(decoder_input)
    features = extractor(clip, sampling_rate=RATE, return_tensors="pt").input_features  # (1, 80, 3000)
    ids = torch.tensor([decoder_input + tokens])
    filters = [SuppressTokensAtBeginLogitsProcessor(config.begin_suppress_tokens, begin),
               SuppressTokensLogitsProcessor(config.suppress_tokens),
               WhisperTimeStampLogitsProcessor(config, begin_index=begin)]
    with torch.no_grad():
        logits = whisper(input_features=features, decoder_input_ids=ids).logits[0]  # (L, V)
    total = 0.0
    for k, token in enumerate(tokens):
        scores = logits[begin + k - 1][None]  # (1, V): the position that predicts token k
        for step in filters:
            scores = step(ids[:, : begin + k], scores)
        total += torch.log_softmax(scores, dim=-1)[0, token].item()
    sot = decoder_input.index(config.decoder_start_token_id)
    no_speech = logits[sot].softmax(dim=-1)[tokenizer.convert_tokens_to_ids("<|nospeech|>")].item()
    return total / len(tokens), no_speech


@pytest.mark.parametrize("beams", [1, 3])
def test_avg_logprob_and_no_speech_prob_match_a_teacher_forced_forward(parts, beams):
    whisper, extractor, tokenizer = parts
    recognizer = Recognizer(whisper, extractor, tokenizer, num_beams=beams)
    clips = [clip for _, clip in speech_windows(TWO_WINDOWS)]
    decoded = recognizer.decode(clips, language="en")  # one batch, as transcribe decodes them
    eos, init = whisper.generation_config.eos_token_id, tokenizer.convert_tokens_to_ids(INIT)
    assert [d.tokens[-1] == eos for d in decoded] == [True, beams == 1]  # one beam row is cut at max_new_tokens
    for clip, window in zip(clips, decoded, strict=True):
        avg_logprob, no_speech = teacher_forced(parts, clip, init, window.tokens)
        assert np.isfinite(window.avg_logprob) and window.avg_logprob < 0
        assert window.avg_logprob == pytest.approx(avg_logprob, abs=1e-5)
        assert 0 <= window.no_speech_prob <= 1 and window.no_speech_prob == pytest.approx(no_speech, rel=1e-4)


def test_scores_with_a_prompt_count_only_the_generated_tokens(parts):
    whisper, extractor, tokenizer = parts
    recognizer = Recognizer(whisper, extractor, tokenizer, num_beams=1)
    clip = speech_windows(TWO_WINDOWS)[1][1]
    (window,) = recognizer.decode([clip], language="en", prompt="a quiz about the sky")
    prompt = tokenizer.get_prompt_ids("a quiz about the sky").tolist()  # <|startofprev|> and the prompt's tokens
    init = tokenizer.convert_tokens_to_ids(INIT)
    avg_logprob, no_speech = teacher_forced(parts, clip, prompt + init, window.tokens)
    assert window.avg_logprob == pytest.approx(avg_logprob, abs=1e-5)
    assert window.no_speech_prob == pytest.approx(no_speech, rel=1e-4)


def test_a_whisper_without_alignment_heads_cannot_time_words(parts):
    whisper, extractor, tokenizer = parts
    config = whisper.generation_config.__class__.from_dict(whisper.generation_config.to_dict())
    del config.alignment_heads
    recognizer = Recognizer(types.SimpleNamespace(generation_config=config), extractor, tokenizer, name="headless")
    assert not recognizer.can_time_words
    with pytest.raises(OmniError, match="headless has no alignment heads"):
        recognizer.transcribe(TWO_WINDOWS, language="en", word_timestamps=True)


# Through the server and the official client ---------------------------------------------------------------------
KEY = "asr-key"


@pytest.fixture(scope="module")
def server(tiny_lm, whisper_dir):
    from omnilm.serve import ServeSettings, create_app
    from omnilm.serve.background import BackgroundServer
    from omnilm.serve.voice import VoiceSettings

    voice = VoiceSettings(asr=str(whisper_dir), asr_beams=3, tts="none")
    with BackgroundServer(create_app(tiny_lm, ServeSettings(api_key=KEY), voice)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def transcribe(client, audio: np.ndarray, granularities: list[str]):
    return client.audio.transcriptions.create(model="whisper-1", file=("audio.wav", wav(audio)), language="en",
                                              response_format="verbose_json", timestamp_granularities=granularities)


def test_every_segment_carries_its_windows_scores(server, client):
    from omnilm.media import load_audio

    verbose = transcribe(client, TWO_WINDOWS, ["segment"])
    windows = speech_windows(load_audio(wav(TWO_WINDOWS)))  # what the server heard (16-bit samples)
    decoded = server.app.state.voice.recognizer.decode([clip for _, clip in windows], language="en")
    second = windows[1][0] / RATE
    assert {s.start < second for s in verbose.segments} == {True, False} and verbose.words is None
    for segment in verbose.segments:
        window = decoded[segment.start >= second]
        assert segment.avg_logprob == pytest.approx(window.avg_logprob, rel=1e-9)
        assert segment.no_speech_prob == pytest.approx(window.no_speech_prob, rel=1e-9)


def test_word_timestamps_are_ordered_within_their_window_and_shifted_by_it(client):
    verbose = transcribe(client, TWIN_WINDOWS, ["word", "segment"])
    words, (first, second) = verbose.words, speech_windows(TWIN_WINDOWS)
    assert "".join(w.word for w in words) == "".join(verbose.text.split())  # every character, once, in order
    assert [w.word for w in words] == [part for s in verbose.segments for part in s.text.split()]  # cut at spaces
    times = [t for w in words for t in (w.start, w.end)]
    assert times == sorted(times) and times[-1] > times[0]
    start, length = second[0] / RATE, second[1].size / RATE
    early, late = [w for w in words if w.start < start], [w for w in words if w.start >= start]
    assert early and all(first[0] / RATE <= w.start <= w.end <= (first[0] + first[1].size) / RATE for w in early)
    assert all(start <= w.start <= w.end <= start + length for w in late)
    assert [w.word for w in late] == [w.word for w in early]  # the same clip, heard again 30 s later
    shift = start - first[0] / RATE
    for a, b in zip(early, late, strict=True):
        assert (b.start, b.end) == pytest.approx((a.start + shift, a.end + shift), abs=0.011)
    assert verbose.segments and verbose.segments[-1].end <= start + length


def test_word_only_answers_words_without_segments(client):
    verbose = transcribe(client, TWO_WINDOWS[: 12 * RATE], ["word"])
    assert verbose.words and verbose.segments is None


@pytest.mark.parametrize(("options", "message"), [
    ({"response_format": "json", "timestamp_granularities": ["word"]}, "only with response_format verbose_json"),
    ({"response_format": "verbose_json", "timestamp_granularities": ["char"]}, "unknown timestamp granularity"),
])
def test_bad_granularities_are_400s(client, options, message):
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav(TWO_WINDOWS[:RATE])), **options)
    assert err.value.body["param"] == "timestamp_granularities" and message in err.value.body["message"]


def test_words_from_a_whisper_without_alignment_heads_are_a_clear_400(server, client, monkeypatch):
    monkeypatch.setattr(server.app.state.voice.recognizer, "can_time_words", False)
    with pytest.raises(openai.BadRequestError, match="has no alignment heads") as err:
        transcribe(client, TWO_WINDOWS[:RATE], ["word"])
    assert err.value.body["param"] == "timestamp_granularities"


# Real weights ---------------------------------------------------------------------------------------------------
@pytest.mark.real
@pytest.mark.requires_tool("espeak-ng")
def test_whisper_base_times_the_words_of_espeak_speech():
    from omnilm.media import load_audio
    from omnilm.speech.encode import encode_audio
    from omnilm.speech.tts import load_engine

    sentence = "I would like a cup of coffee with milk, please."
    samples, rate = load_engine("espeak").synthesize(sentence, voice="alloy")
    audio = np.concatenate([silence(1.0), load_audio(encode_audio(samples, rate, "wav"))])
    recognizer = Recognizer.load("pkg:whisper-base", num_beams=1)
    assert recognizer.no_speech_id == recognizer.tokenizer.convert_tokens_to_ids("<|nocaptions|>")  # its old name
    transcript = recognizer.transcribe(audio, language="en", word_timestamps=True)

    def plain(text: str) -> list[str]:
        return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()

    assert plain(" ".join(w.word for w in transcript.words)) == plain(sentence), transcript.text
    starts = [w.start for w in transcript.words]
    assert starts == sorted(starts) and starts[-1] - starts[0] > 1.0  # spread over the sentence, in order
    assert 0.7 <= starts[0] and transcript.words[-1].end <= audio.size / RATE + 0.05  # after the leading silence
    assert all(w.end >= w.start for w in transcript.words)
    segment = transcript.segments[0]
    assert -1.0 < segment.avg_logprob < 0 and segment.no_speech_prob < 0.2
