"""Voice-bot latency: end of the user's speech → first byte of the spoken reply, on 2 cores, split into parts.

The question is spoken by espeak-ng and sent, as OpenAI clients send it, to `omnilm serve` on loopback: a
streamed chat completion with an `input_audio` part and `modalities: ["text", "audio"]` (pcm16, OpenAI's
streaming format). The client's clock starts when the speech ends (the request is sent) and records the first
text delta, the moment the first sentence is complete and the first audio byte. The speech recognition (the
model's Whisper, `audio.mode: transcribe`) and the speech synthesis of that sentence are also timed alone, in
the same run, to split "first token" into ASR + the LLM's prefill.

Model: the quickstart model (`omnilm quickstart` → runs/quickstart/model; $OMNILM_VOICE_MODEL overrides),
whose answer to "<sentence> What did I say? Repeat it word for word." is that one sentence; without one, the
same packaged parts untrained (Qwen2.5-0.5B-Instruct + Whisper base transcribing), named in the result.
A model that hears natively (`--recipe native`: Whisper-encoder tokens, no transcript, so nothing to repeat)
is asked what it was trained for instead: the first question of its run's easy-VQA evaluation (or
$OMNILM_VOICE_QUESTION, e.g. "Describe the image." for a phrase), spoken, with the image, then the recipe's
instruction in text ("Answer with one word.", as it was trained); "asr" is then
absent and the audio encoding is part of "prefill to first token". With $OMNILM_VOICE_TASK=repeat it hears
an easy-VQA question alone ($OMNILM_VOICE_QUESTION or REPEAT_QUESTION), then "What did I say? Repeat it word for
word." in text (the task the native recipe's `audio_align` stage trains), so its answer is a sentence.
A native model trained `transcript_first` replies with the words it heard, then its answer: two sentences, the
first spoken while the second is decoded. $OMNILM_VOICE_ENGINE=llama.cpp runs the LLM in llama.cpp (the model is
exported to GGUF once, Q8_0 unless $OMNILM_VOICE_QUANT says otherwise); the default is transformers.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import statistics
import time
from pathlib import Path

import httpx
import torch

import omnilm
from omnilm.serve import ServeSettings, create_app
from omnilm.serve.background import BackgroundServer
from omnilm.speech.encode import encode_audio
from omnilm.speech.sentences import SentenceSplitter
from omnilm.speech.tts import load_engine

logger = logging.getLogger(__name__)

THREADS = 2
ROUNDS = 3
TARGET_SECONDS = 1.5
QUESTION = "The red ball is under the table. What did I say? Repeat it word for word."
REPEAT_QUESTION = "Is there not a red shape in the image?"  # OMNILM_VOICE_TASK=repeat: words its training spoke
CANDIDATES = ("runs/quickstart/model", "/tmp/demo/runs/quickstart/model")


def load_model():
    """(the quickstart model, its path) or, where none was trained, (the same parts untrained, a description)."""
    root = Path(__file__).resolve().parents[1]
    candidates = [os.environ["OMNILM_VOICE_MODEL"]] if os.environ.get("OMNILM_VOICE_MODEL") else CANDIDATES
    for candidate in candidates:
        path = Path(candidate) if Path(candidate).is_absolute() else root / candidate
        if (path / "omnilm.json").is_file():
            return omnilm.load(str(path), **engine_options()), str(path)
    from omnilm.config import OmniConfig
    from omnilm.lm import OmniLM
    from omnilm.quickstart import load_recipe

    parts = load_recipe().train.model.config  # its LLM and Whisper (transcribe mode), without the image side
    logger.warning("no trained quickstart model (run `omnilm quickstart`): timing its parts untrained")
    lm = OmniLM.from_config(OmniConfig.from_dict({"llm": parts["llm"], "audio": parts["audio"]}))
    return lm, f"untrained quickstart parts ({parts['llm']['source']} + {parts['audio']['source']}), no LoRA"


def engine_options() -> dict:
    """omnilm.load's engine keywords from $OMNILM_VOICE_ENGINE (and $OMNILM_VOICE_QUANT): none for the default."""
    engine = os.environ.get("OMNILM_VOICE_ENGINE")
    if not engine or engine == "torch":
        return {}
    options = {"engine": engine, "n_threads": THREADS}
    if os.environ.get("OMNILM_VOICE_QUANT"):
        options["quant"] = os.environ["OMNILM_VOICE_QUANT"]
    return options


def _native_question(model: str) -> tuple[str, list[dict]]:
    """(the first typed eval question of the native run that trained `model`, its image as a content part)."""
    from omnilm.data.records import read_jsonl

    data = Path(model).parent / "data"
    record = read_jsonl(data / "eval-typed.jsonl")[0]
    image = data / (record["image"][0] if isinstance(record["image"], list) else record["image"])
    url = "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode("ascii")
    question = os.environ.get("OMNILM_VOICE_QUESTION") or record["conversations"][0]["value"].removeprefix("<image>\n")
    return question, [{"type": "image_url", "image_url": {"url": url}}]


def _spoken_turn(client: httpx.Client, wav_b64: str, parts: list[dict], after: list[dict]) -> dict:
    """One voice-bot turn through the API (`parts`, `after`: content before and after the speech, e.g. an image,
    an instruction); seconds from the end of speech to each event."""
    speech = {"type": "input_audio", "input_audio": {"data": wav_b64, "format": "wav"}}
    body = {"messages": [{"role": "user", "content": [*parts, speech, *after]}],
            "modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "pcm16"}, "stream": True,
            "max_tokens": 48, "temperature": 0}
    marks, text, splitter = {}, "", SentenceSplitter()
    start = time.perf_counter()
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            audio = choices[0].get("delta", {}).get("audio") or {}
            now = time.perf_counter() - start
            if audio.get("transcript"):
                marks.setdefault("first_token", now)
                marks["last_token"] = now
                text += audio["transcript"]
                if splitter.feed(audio["transcript"]):
                    marks.setdefault("first_sentence", now)
            if audio.get("data"):
                marks["last_audio"] = now  # the last chunk: the speech of the reply's last sentence
            if audio.get("data") and "first_audio" not in marks:
                marks["first_audio"] = now
                marks.setdefault("first_sentence", marks["last_token"])  # completed by the reply's end (EOS)
                marks["audio_bytes"] = len(base64.b64decode(audio["data"]))
            if choices[0].get("finish_reason"):
                marks["done"] = now
    return {**marks, "answer": text}


def _typed_turn(client: httpx.Client, text: str, parts: list[dict]) -> float:
    """Reference: the same question typed, seconds to the first text token."""
    content = [*parts, {"type": "text", "text": text}] if parts else text
    body = {"messages": [{"role": "user", "content": content}], "stream": True, "max_tokens": 48, "temperature": 0}
    start = time.perf_counter()
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and '"content": "' in line and '"content": ""' not in line:
                return time.perf_counter() - start
    return float("nan")


def _greedy_asr_seconds(transcriber, clip) -> float:
    """The same transcription with greedy decoding (one beam): what `transcribe_beams: 1` would save."""
    if transcriber is None:
        return float("nan")
    beams, transcriber.num_beams = transcriber.num_beams, 1
    try:
        start = time.perf_counter()
        transcriber.transcribe([clip])
        return time.perf_counter() - start
    finally:
        transcriber.num_beams = beams


def run() -> dict:
    torch.set_num_threads(THREADS)
    lm, model = load_model()
    native = lm.config.audio is not None and lm.config.audio.mode == "embed"
    after = []  # content after the speech
    repeat = native and os.environ.get("OMNILM_VOICE_TASK") == "repeat"
    if repeat:
        from omnilm.data.easy_vqa import REPEAT_INSTRUCTION

        question, parts = os.environ.get("OMNILM_VOICE_QUESTION") or REPEAT_QUESTION, []
        after = [{"type": "text", "text": REPEAT_INSTRUCTION}]
    elif native:  # asked as the native recipe trains: image, speech, then the task's instruction
        from omnilm.quickstart import load_recipe

        question, parts = _native_question(model)
        after = [{"type": "text", "text": load_recipe("native").answer_suffix}]
    else:
        question, parts = QUESTION, []
    engine = load_engine("espeak")
    samples, rate = engine.synthesize(question, voice="alloy")
    wav = encode_audio(samples, rate, "wav")
    wav_b64 = base64.b64encode(wav).decode("ascii")
    clip = omnilm.media.load_audio(wav)
    transcriber = lm.processor.transcriber
    rounds = []
    with BackgroundServer(create_app(lm, ServeSettings())) as server, \
            httpx.Client(base_url=server.url, timeout=300) as client:
        _spoken_turn(client, wav_b64, parts, after)  # warm-up: first calls allocate
        for _ in range(ROUNDS):  # the parts alone and the whole, interleaved
            t = time.perf_counter()
            heard = transcriber.transcribe([clip])[0] if transcriber is not None else None
            asr = time.perf_counter() - t
            greedy = _greedy_asr_seconds(transcriber, clip)
            turn = _spoken_turn(client, wav_b64, parts, after)
            t = time.perf_counter()
            first = SentenceSplitter()
            sentence = (first.feed(turn["answer"]) or first.flush() or [turn["answer"]])[0]
            encode_audio(*engine.synthesize(sentence, voice="alloy"), "pcm")
            tts = time.perf_counter() - t
            typed = _typed_turn(client, (heard or question) + "".join(a["text"] for a in after), parts)
            rounds.append({**turn, "asr": asr, "asr_greedy": greedy, "tts": tts, "typed_first_token": typed, "heard": heard,
                           "sentence": sentence})
    med = {key: statistics.median(r[key] for r in rounds) for key in
           ("asr", "asr_greedy", "first_token", "first_sentence", "first_audio", "last_audio", "tts", "typed_first_token",
            "done")}
    result = {
        "model": model,
        "engine": lm.engine,
        "threads": THREADS,
        "rounds": ROUNDS,
        "question": question,
        "task": "repeat" if repeat else "answer",
        "hears": "natively (audio tokens)" if native else "through Whisper's transcript",
        "heard": rounds[-1]["heard"],
        "answer": rounds[-1]["answer"],
        "question_seconds": round(clip.size / 16_000, 2),
        "end_of_speech_to_first_audio_byte_s": round(med["first_audio"], 3),
        "target_s": TARGET_SECONDS,
        "meets_target": med["first_audio"] <= TARGET_SECONDS,
        "parts_s": {
            "asr_whisper": round(med["asr"], 3),  # 0 for a model that hears natively
            "llm_prefill_to_first_token": round(med["first_token"] - med["asr"], 3),  # audio encoding included
            "first_token_to_first_sentence": round(med["first_sentence"] - med["first_token"], 3),
            # a sentence the reply's end completes is seen at its last token: this part holds the EOS step too
            "tts_first_sentence": round(med["first_audio"] - med["first_sentence"], 3),
        },
        "alone_s": {"asr_whisper": round(med["asr"], 3), "asr_whisper_greedy": None if native else round(med["asr_greedy"], 3),
                    "tts_first_sentence_espeak_pcm": round(med["tts"], 3)},
        "reference_typed_question_first_token_s": round(med["typed_first_token"], 3),
        "whole_reply_s": round(med["done"], 3),
        "last_audio_chunk_s": round(med["last_audio"], 3),  # a transcript-first reply: the answer's speech
        "all_rounds_first_audio_s": [round(r["first_audio"], 3) for r in rounds],
    }
    logger.info("voice bot: %.2f s end of speech → first audio byte (target %.1f s); parts %s",
                med["first_audio"], TARGET_SECONDS, result["parts_s"])
    return result
