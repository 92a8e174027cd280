"""Build easy-VQA (the `easy-vqa` PyPI package) on disk in the LLaVA record shape.

Layout written under ``out_dir``::

    images/{split}/{image_id}.png
    {split}.jsonl                 one record per question:
        {"id", "image", "conversations": [{"from": "human", "value": "<image>\\n{question}"},
                                          {"from": "gpt", "value": answer}], "category": "shape|color|yesno"}
    shapes-caption-{split}.jsonl  one record per image: "a blue circle" (category: the shape)
    spoken-{split}.jsonl, audio/  (build_easy_vqa_spoken) the questions spoken by espeak-ng

Captions come from each image's questions (its shape and colour answers, and what yes/no answers
confirm); the few images whose questions do not pin down both are left out of the caption file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

from omnilm.io import atomic_path, atomic_write_text

logger = logging.getLogger(__name__)

SHAPES = ("circle", "rectangle", "triangle")
COLORS = ("black", "blue", "brown", "gray", "green", "red", "teal", "yellow")
CAPTION_PROMPT = "Describe the image."
# espeak-ng voices: training data may use TRAIN_VOICES; the evaluation uses voices never trained on.
TRAIN_VOICES = ("en-us", "en", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
TEST_VOICES = ("en-gb-x-rp", "en-029", "en-gb-scotland")


def _package():
    try:
        import easy_vqa
    except ImportError as error:
        raise ImportError("building easy-VQA needs the `easy-vqa` package: pip install easy-vqa==1.0") from error
    return easy_vqa


def category(answer: str) -> str:
    """Question category from its answer: ``shape``, ``color`` or ``yesno``."""
    if answer in SHAPES:
        return "shape"
    if answer in COLORS:
        return "color"
    if answer in ("yes", "no"):
        return "yesno"
    raise ValueError(f"unexpected easy-VQA answer {answer!r}")


def _image_facts(questions: list[tuple[str, str, int]]) -> dict[int, dict[str, set[str]]]:
    """Shape and colour of each image as far as its questions and answers reveal them."""
    facts: dict[int, dict[str, set[str]]] = defaultdict(lambda: {"shape": set(), "color": set()})
    for text, answer, image_id in questions:
        words = set(re.findall(r"[a-z]+", text))
        mentioned = {"shape": words & set(SHAPES), "color": words & set(COLORS)}
        if answer in SHAPES or answer in COLORS:
            facts[image_id][category(answer)].add(answer)
            other = "color" if answer in SHAPES else "shape"
            facts[image_id][other] |= mentioned[other]
        elif (answer == "yes") != bool(words & {"not", "no"}):  # "is there a red shape?" yes / "... not ..." no
            for key in ("shape", "color"):
                facts[image_id][key] |= mentioned[key]
    return facts


def _write_jsonl(path: Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in records))


def _record(record_id: str, image: str, prompt: str, answer: str, category_name: str, **extra) -> dict:
    return {
        "id": record_id,
        "image": image,
        "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}],
        "category": category_name,
        **extra,
    }


def build_easy_vqa(out_dir: str | Path, splits=("train", "test"), limit: int | None = None) -> dict:
    """Write easy-VQA ``splits`` under ``out_dir``; ``limit`` keeps the first N questions per split.

    Returns ``{"dir", "files": {name: path}, "counts": {name: records}}``.
    """
    package = _package()
    out = Path(out_dir)
    files, counts = {}, {}
    for split in splits:
        if split not in ("train", "test"):
            raise ValueError(f"unknown easy-VQA split {split!r}; choose from train, test")
        texts, answers, image_ids = getattr(package, f"get_{split}_questions")()
        image_paths = getattr(package, f"get_{split}_image_paths")()
        questions = list(zip(texts, answers, image_ids))[:limit]
        image_dir = out / "images" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        used = sorted({image_id for _, _, image_id in questions})
        for image_id in used:
            target = image_dir / f"{image_id}.png"
            if not target.is_file():
                shutil.copyfile(image_paths[image_id], target)
        records = [
            _record(f"{split}-{i}", f"images/{split}/{image_id}.png", f"<image>\n{text}", answer, category(answer))
            for i, (text, answer, image_id) in enumerate(questions)
        ]
        captions = []
        for image_id, fact in sorted(_image_facts(questions).items()):
            if len(fact["shape"]) == 1 and len(fact["color"]) == 1:
                (shape,), (color,) = fact["shape"], fact["color"]
                captions.append(_record(f"{split}-image-{image_id}", f"images/{split}/{image_id}.png",
                                        f"<image>\n{CAPTION_PROMPT}", f"a {color} {shape}", shape))
        for name, rows in ((f"{split}.jsonl", records), (f"shapes-caption-{split}.jsonl", captions)):
            _write_jsonl(out / name, rows)
            files[name], counts[name] = str(out / name), len(rows)
        logger.info("easy-VQA %s: %d questions, %d captioned images of %d", split, len(records), len(captions),
                    len(used))
    return {"dir": str(out), "files": files, "counts": counts}


def speak(text: str, voice: str, path: Path) -> None:
    """Write ``text`` spoken by espeak-ng ``voice`` to the WAV file ``path``."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RuntimeError("spoken questions need espeak-ng: apt-get install espeak-ng")
    with atomic_path(path) as tmp:
        subprocess.run([espeak, "-v", voice, "-w", str(tmp), text], check=True, capture_output=True, timeout=60)


def build_easy_vqa_spoken(
    out_dir: str | Path, splits=("test",), limit: int | None = None, voices: tuple[str, ...] | None = None
) -> dict:
    """easy-VQA with each question spoken (image + audio in, answer out).

    Voices rotate deterministically over the questions: ``TEST_VOICES`` for the test split (held out from
    training) and ``TRAIN_VOICES`` for train, unless ``voices`` is given. Each distinct (text, voice) is
    synthesised once.
    """
    out = Path(out_dir)
    result = build_easy_vqa(out, splits=splits, limit=limit)
    audio_dir = out / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    for split in splits:
        split_voices = voices or (TEST_VOICES if split == "test" else TRAIN_VOICES)
        spoken = []
        for index, line in enumerate((out / f"{split}.jsonl").read_text().splitlines()):
            record = json.loads(line)
            question = record["conversations"][0]["value"].removeprefix("<image>\n")
            voice = split_voices[index % len(split_voices)]
            name = hashlib.sha1(f"{voice}|{question}".encode()).hexdigest()[:16] + ".wav"
            if not (audio_dir / name).is_file():
                speak(question, voice, audio_dir / name)
            record["audio"] = f"audio/{name}"
            record["conversations"][0]["value"] = "<image>\n<audio>"
            spoken.append({**record, "question": question, "voice": voice})
        name = f"spoken-{split}.jsonl"
        _write_jsonl(out / name, spoken)
        result["files"][name], result["counts"][name] = str(out / name), len(spoken)
    return result
