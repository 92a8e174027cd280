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
The training-set surgery of the quickstart recipe (balance, paired_order, single_turn, repeat_records) is
here too; docs/quickstart.md says what each one measured.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

from omnilm.data.records import read_jsonl, write_jsonl
from omnilm.errors import OmniError
from omnilm.io import atomic_path

logger = logging.getLogger(__name__)

SHAPES = ("circle", "rectangle", "triangle")
COLORS = ("black", "blue", "brown", "gray", "green", "red", "teal", "yellow")
CAPTION_PROMPT = "Describe the image."
# espeak-ng voices: training data may use TRAIN_VOICES; the evaluation uses voices never trained on.
TRAIN_VOICES = ("en-us", "en", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
TEST_VOICES = ("en-gb-x-rp", "en-029", "en-gb-scotland")
REPEAT_INSTRUCTION = "\nWhat did I say? Repeat it word for word."
ESPEAK_INSTALL_HINT = ("espeak-ng is not installed; `make system-deps` installs it (or `apt-get install -y espeak-ng`, "
                       "`brew install espeak-ng`)")


def category(answer: str) -> str:
    """Question category from its answer: ``shape``, ``color`` or ``yesno``."""
    if answer in SHAPES:
        return "shape"
    if answer in COLORS:
        return "color"
    if answer in ("yes", "no"):
        return "yesno"
    raise ValueError(f"unexpected easy-VQA answer {answer!r}")


def split_questions(split: str) -> tuple[list[tuple[str, str, int]], list[str]]:
    """easy-VQA ``split``'s (question, answer, image id) triples and its image paths (indexed by image id)."""
    if split not in ("train", "test"):
        raise OmniError(f"unknown easy-VQA split {split!r}; choose from train, test")
    try:
        import easy_vqa
    except ImportError as error:
        raise ImportError("building easy-VQA needs the `easy-vqa` package: pip install easy-vqa==1.0") from error
    texts, answers, image_ids = getattr(easy_vqa, f"get_{split}_questions")()
    return list(zip(texts, answers, image_ids)), getattr(easy_vqa, f"get_{split}_image_paths")()


def image_labels(questions: list[tuple[str, str, int]]) -> dict[int, tuple[str | None, str | None]]:
    """(shape, colour) of each image in image-id order, as far as its questions and answers pin them down
    (None where they reveal none, or several)."""
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
    return {image_id: tuple(next(iter(fact[key])) if len(fact[key]) == 1 else None for key in ("shape", "color"))
            for image_id, fact in sorted(facts.items())}


def _record(record_id: str, image: str, prompt: str, answer: str, category_name: str) -> dict:
    return {"id": record_id, "image": image,
            "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}],
            "category": category_name}


def build_easy_vqa(out_dir: str | Path, splits=("train", "test"), limit: int | None = None) -> dict:
    """Write easy-VQA ``splits`` under ``out_dir``; ``limit`` keeps the first N questions per split.

    Returns ``{"dir", "files": {name: path}, "counts": {name: records}}``.
    """
    out = Path(out_dir)
    files, counts = {}, {}
    for split in splits:
        questions, image_paths = split_questions(split)
        questions = questions[:limit]
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
        captions = [_record(f"{split}-image-{image_id}", f"images/{split}/{image_id}.png", f"<image>\n{CAPTION_PROMPT}",
                            f"a {color} {shape}", shape)
                    for image_id, (shape, color) in image_labels(questions).items() if shape and color]
        for name, rows in ((f"{split}.jsonl", records), (f"shapes-caption-{split}.jsonl", captions)):
            write_jsonl(out / name, rows)
            files[name], counts[name] = str(out / name), len(rows)
        logger.info("easy-VQA %s: %d questions, %d captioned images of %d", split, len(records), len(captions),
                    len(used))
    return {"dir": str(out), "files": files, "counts": counts}


def espeak_binary() -> str:
    """The espeak-ng executable; RuntimeError saying how to install it when it is missing."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise RuntimeError(ESPEAK_INSTALL_HINT)
    return binary


def speak(text: str, voice: str, path: Path, *, speed: int | None = None, pitch: int | None = None) -> None:
    """Write ``text`` spoken by espeak-ng ``voice`` to the WAV file ``path`` as espeak writes it; ``speed`` (words
    per minute) and ``pitch`` (0-99) are passed on when given, else the voice's own apply. The text goes to
    espeak-ng on stdin, so a text that starts with "-" is spoken, never read as an option."""
    command = [espeak_binary(), "--stdin", "-b", "1", "-v", voice]  # the text on stdin (UTF-8), never in argv
    command += ["-s", str(speed)] if speed is not None else []
    command += ["-p", str(pitch)] if pitch is not None else []
    with atomic_path(path) as tmp:
        result = subprocess.run([*command, "-w", str(tmp)], input=text, check=False, capture_output=True, text=True,
                                encoding="utf-8", timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"espeak-ng failed for voice {voice!r}: {result.stderr.strip() or result.returncode}")


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
        for index, record in enumerate(read_jsonl(out / f"{split}.jsonl")):
            question = record["conversations"][0]["value"].removeprefix("<image>\n")
            voice = split_voices[index % len(split_voices)]
            name = hashlib.sha1(f"{voice}|{question}".encode()).hexdigest()[:16] + ".wav"
            if not (audio_dir / name).is_file():
                speak(question, voice, audio_dir / name)
            record["audio"] = f"audio/{name}"
            record["conversations"][0]["value"] = "<image>\n<audio>"
            spoken.append({**record, "question": question, "voice": voice})
        name = f"spoken-{split}.jsonl"
        write_jsonl(out / name, spoken)
        result["files"][name], result["counts"][name] = str(out / name), len(spoken)
    return result


# The quickstart's training set ------------------------------------------------------------------
def question_type(question: str) -> str:
    """The question with its easy-VQA colour and shape words masked: "is there not a {color} shape?"."""
    words = re.sub(rf"\b({'|'.join(COLORS)})\b", "{color}", question.lower())
    return re.sub(rf"\b({'|'.join(SHAPES)})\b", "{shape}", words)


def is_negated(question: str) -> bool:
    """Whether an easy-VQA yes/no question is asked the negative way ("is there not ...", "is no ...")."""
    return re.search(r"\b(not|no)\b", question.lower()) is not None


def balance(records: list[dict], seed: int, open_fraction: float = 1.0, negated_fraction: float = 1.0) -> list[dict]:
    """A seeded ``open_fraction`` of the shape and colour questions; yes/no questions balanced by answer
    within each question type, of the negated types a seeded ``negated_fraction``.

    easy-VQA's yes/no answers follow the question's wording (7 of 8 "is there a <colour> shape?" are "no"), so
    as VQA v2 balanced its answers, each type keeps a seeded sample of its majority answer as large as its
    minority: the image must decide. Fewer negated questions let the plain match be learnt before the negation.
    """
    rng = random.Random(seed)
    by_type: dict[tuple[str, str], list[int]] = {}
    for i, record in enumerate(records):
        if record.get("category") == "yesno":
            turns = record["conversations"]
            key = (question_type(turns[0]["value"]), turns[1]["value"])
            by_type.setdefault(key, []).append(i)
    keep = {i for i, record in enumerate(records) if record.get("category") != "yesno" and rng.random() < open_fraction}
    for (kind, answer), indices in by_type.items():
        other = by_type.get((kind, "no" if answer == "yes" else "yes"), [])
        chosen = indices if len(indices) <= len(other) else rng.sample(indices, len(other))
        if is_negated(kind) and negated_fraction < 1.0:
            chosen = rng.sample(chosen, round(len(chosen) * negated_fraction))
        keep.update(chosen)
    return [record for i, record in enumerate(records) if i in keep]


def paired_order(records: list[dict], seed: int) -> list[dict]:
    """``records`` in a seeded order of twos: each yes/no question beside the same question about another image
    with the other answer (VQA v2's complementary pairs), the other records two by two.

    Trained in this order with an even batch size, a pair shares its batch: the wording is held fixed and only
    the image decides the answer.
    """
    rng = random.Random(seed)
    by_question: dict[str, dict[str, list[dict]]] = {}
    rest = []
    for record in records:
        if record.get("category") == "yesno":
            question, answer = (turn["value"] for turn in record["conversations"][:2])
            by_question.setdefault(question.lower(), {}).setdefault(answer, []).append(record)
        else:
            rest.append(record)
    units = []
    for answers in by_question.values():
        yes, no = (rng.sample(answers.get(a, []), len(answers.get(a, []))) for a in ("yes", "no"))
        units += [[a, b] if rng.random() < 0.5 else [b, a] for a, b in zip(yes, no)]
        rest += yes[len(no):] + no[len(yes):]
    rng.shuffle(rest)
    units += [rest[i : i + 2] for i in range(0, len(rest) - 1, 2)]
    rng.shuffle(units)
    return [record for unit in units for record in unit] + rest[len(rest) - len(rest) % 2 :]  # odd one last


def _capitalised(text: str) -> str:
    """``text`` with a capital first letter, as Whisper writes a transcript."""
    return text[:1].upper() + text[1:]


def single_turn(records: list[dict], suffix: str) -> list[dict]:
    """One question per training record, asked exactly as the evaluation asks it (``question + suffix``).

    Not LLaVA's multi-turn packing: in easy-VQA a later question is often answered by an earlier turn's text,
    so packed conversations teach reading the answer off the conversation instead of the image.
    Every other question starts with a capital letter, as Whisper's transcripts do in transcribe mode.
    """
    rows = []
    for i, record in enumerate(records):
        question = record["conversations"][0]["value"].removeprefix("<image>\n")
        if i % 2:
            question = _capitalised(question)
        turns = [{"from": "human", "value": f"<image>\n{question}{suffix}"}, record["conversations"][1]]
        rows.append({**record, "conversations": turns})
    return rows


def repeat_records(records: list[dict], count: int, seed: int) -> list[dict]:
    """``count`` text-only records: a seeded question, capitalised as Whisper writes it, to be repeated."""
    rows = []
    for record in random.Random(seed).sample(records, min(count, len(records))):
        sentence = _capitalised(record["conversations"][0]["value"].removeprefix("<image>\n"))
        rows.append({"id": f"repeat-{record['id']}", "category": "repeat", "conversations": [
            {"from": "human", "value": sentence + REPEAT_INSTRUCTION}, {"from": "gpt", "value": sentence}]})
    return rows
