"""`omnilm data spoken SRC.jsonl OUT_DIR`: the same dataset with every human turn spoken by espeak-ng.

Each user turn's text becomes a 16 kHz WAV (its media placeholders stay, followed by `<audio>`); the
assistant turns stay text. Voice, speed and pitch vary per record, drawn deterministically from the
record's id. The test split uses voices never used for training (`TEST_VOICES` vs `TRAIN_VOICES`), so
an evaluation measures speakers the model has not heard. Output records are in the LLaVA shape with
the spoken text kept in `spoken_text` and the voice settings in `voice`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from omnilm.config import MODALITIES
from omnilm.data.easy_vqa import TEST_VOICES, TRAIN_VOICES, espeak_binary, speak
from omnilm.data.records import read_records, write_jsonl
from omnilm.data.speech_conditions import (
    CONDITIONS,
    FASTEST_TEMPO,
    FLITE_TEST_VOICE,
    SLOWEST_TEMPO,
    Condition,
    apply,
    augmentation,
    flite_speak,
)
from omnilm.io import atomic_path

logger = logging.getLogger(__name__)

SPEEDS = (140, 160, 175, 190)  # espeak-ng words per minute (its default is 175)
PITCHES = (30, 45, 60, 75)  # espeak-ng pitch, 0-99 (default 50)
SAMPLE_RATE = 16_000  # Whisper's rate: no resampling at training time


def synthesize(text: str, path: Path, *, voice: str, speed: int, pitch: int, condition: Condition | None = None,
               seed: str = "") -> None:
    """Speak `text` into a mono 16 kHz float WAV at `path` (written atomically), under `condition` (noise,
    level, tempo, synthesizer; its noise drawn from `seed`) when given."""
    import numpy as np
    import soundfile

    from omnilm.media import resample

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "speech.wav"
        if condition is not None and condition.synthesizer == "flite":
            flite_speak(text, raw, condition.flite_voice or FLITE_TEST_VOICE)
        else:
            speak(text, voice, raw, speed=speed, pitch=pitch)
        samples, rate = soundfile.read(str(raw), dtype="float32")
    samples = resample(samples if samples.ndim == 1 else samples.mean(axis=1), rate, SAMPLE_RATE)
    if condition is not None:
        rng = np.random.default_rng(int(hashlib.sha256(f"{seed}|{path.name}".encode()).hexdigest()[:8], 16))
        samples = apply(samples, condition, rng)
    with atomic_path(path) as staging:
        soundfile.write(str(staging), np.asarray(samples, dtype=np.float32), SAMPLE_RATE, subtype="FLOAT")


def voice_for(record_id: str, copy: int, voices: tuple[str, ...]) -> dict[str, Any]:
    """Deterministic voice, speed and pitch of copy `copy` of a record."""
    digest = hashlib.sha256(f"{record_id}|{copy}".encode()).digest()
    return {"voice": voices[(digest[0] + copy) % len(voices)], "speed": SPEEDS[digest[1] % len(SPEEDS)],
            "pitch": PITCHES[digest[2] % len(PITCHES)]}


def build_spoken(
    src: str | Path,
    out_dir: str | Path,
    *,
    split: str | None = None,
    copies: int = 1,
    media_root: str | Path | None = None,
    voices: tuple[str, ...] | None = None,
    limit: int | None = None,
    augment: bool = False,
    condition: str | None = None,
    flite_share: float = 0.0,
    fastest: float = FASTEST_TEMPO,
) -> dict:
    """Write `OUT_DIR/<src stem>.jsonl` and `OUT_DIR/audio/*.wav`; returns {"dir", "files", "counts"}.

    `split` (train | test) picks the voice set; by default a source named like *test* / *val* is test.
    `copies` > 1 writes each record several times with different voices (training augmentation).
    `augment` varies each clip's noise, level and tempo (`speech_conditions.augmentation`: tempo up to `fastest`,
    `flite_share` of the clips spoken by flite's training voices); `condition`
    applies one named test condition (`speech_conditions.CONDITIONS`) to every clip.
    """
    espeak_binary()
    if condition is not None and condition not in CONDITIONS:
        raise ValueError(f"unknown speech condition {condition!r}; choose from {', '.join(CONDITIONS)}")
    if augment and condition is not None:
        raise ValueError("augment and condition exclude each other: augmentation is for training, conditions for tests")
    if not 0.0 <= flite_share <= 1.0 or fastest < SLOWEST_TEMPO:
        raise ValueError(f"flite_share must be in [0, 1] and fastest >= {SLOWEST_TEMPO}, got {flite_share} and {fastest}")
    src, out = Path(src), Path(out_dir)
    split = split or ("test" if any(s in src.stem.lower() for s in ("test", "val", "dev")) else "train")
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")
    if copies < 1:
        raise ValueError("copies must be >= 1")
    voices = voices or (TEST_VOICES if split == "test" else TRAIN_VOICES)
    records = read_records(src, media_root, limit=limit)  # validated first: errors give file and line
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for record in records:
        for copy in range(copies):
            setting = voice_for(record.id, copy, voices)
            if augment:
                setting["condition"] = augmentation(f"{record.id}|{copy}", flite_share, fastest)
            elif condition is not None:
                setting["condition"] = CONDITIONS[condition]
            rows.append(_spoken_record(record, copy if copies > 1 else None, setting, out))
    target = out / f"{src.stem}.jsonl"
    write_jsonl(target, rows)
    logger.info("spoke %d records (%s voices: %s) into %s", len(rows), split, ", ".join(voices), target)
    return {"dir": str(out), "files": {target.name: str(target)}, "counts": {target.name: len(rows)}}


def _spoken_record(record, copy: int | None, setting: dict[str, Any], out: Path) -> dict[str, Any]:
    """One LLaVA-shape record: user turns → media placeholders + `<audio>`, the audio spoken once per text."""
    media: dict[str, list[str]] = {m: [] for m in MODALITIES}
    turns, spoken = [], []
    for message in record.messages:
        placeholders, texts = [], []
        for part in message["content"]:
            kind = part["type"]
            if kind == "text":
                texts.append(part["text"])
                continue
            if not isinstance(part[kind], str):
                raise ValueError(f"record {record.id}: inline {kind} data cannot be copied; use file paths")
            media[kind].append(os.path.relpath(part[kind], out))
            placeholders.append(f"<{kind}>")
        text = " ".join(t.strip() for t in texts if t.strip())
        if message["role"] == "user" and text:
            name = hashlib.sha256(json.dumps([text, described_setting(setting)]).encode()).hexdigest()[:20] + ".wav"
            path = out / "audio" / name
            if not path.is_file():
                synthesize(text, path, **setting, seed=record.id)
            media["audio"].append(f"audio/{name}")
            placeholders.append("<audio>")
            spoken.append(text)
            value = "\n".join(placeholders)
        else:
            value = "\n".join([*placeholders, text] if text else placeholders)
        turns.append({"from": {"user": "human", "assistant": "gpt"}.get(message["role"], message["role"]),
                      "value": value})
    row: dict[str, Any] = {**record.fields, "id": record.id if copy is None else f"{record.id}-v{copy}"}
    row.update({kind: paths for kind, paths in media.items() if paths})
    row.update({"conversations": turns, "spoken_text": spoken, "voice": described_setting(setting)})
    if record.category is not None:
        row["category"] = record.category
    return row


def described_setting(setting: dict[str, Any]) -> dict[str, Any]:
    """A voice setting as JSON: its condition, when any, as a plain mapping."""
    if "condition" not in setting:
        return setting
    return {**setting, "condition": dataclasses.asdict(setting["condition"])}
