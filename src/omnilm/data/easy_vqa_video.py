"""Video questions from easy-VQA (`omnilm data easy-vqa-video OUT_DIR`): clips of shapes shown one after another.

Each clip shows 2-4 easy-VQA images of one split (consecutive ones differ in shape or colour), each for an
equal run of frames, encoded with PyAV. Its questions need the frames, and most need their order::

    What shape appears first?          circle        (order)
    What colour is the first shape?    blue          (order)
    What shape appears last?           triangle      (order)
    What colour is the last shape?     red           (order)
    How many shapes are shown?         three         (count)
    Does a green shape appear?         yes | no      (contains; half yes, half no)

Layout under ``out_dir``: ``videos/{split}/{clip_id}.mp4`` and ``video-{split}.jsonl`` (LLaVA shape, key
``video``; ``category`` is the question type; ``shapes`` lists the clip's (shape, colour) in order and
``source_images`` their easy-VQA image ids). Test clips use only easy-VQA test images, train clips only
train images.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
from PIL import Image

from omnilm.data.easy_vqa import COLORS, image_labels, split_questions
from omnilm.data.records import write_jsonl
from omnilm.io import atomic_path

logger = logging.getLogger(__name__)

COUNT_WORDS = {2: "two", 3: "three", 4: "four"}
ORDER_CATEGORIES = ("video-first-shape", "video-first-color", "video-last-shape", "video-last-color")
DEFAULT_CLIPS = {"train": 1500, "test": 200}


def clip_questions(shapes: list[tuple[str, str]], rng: random.Random) -> list[tuple[str, str, str]]:
    """(question, answer, category) for a clip showing ``shapes`` [(shape, colour), ...] in order."""
    (first_shape, first_color), (last_shape, last_color) = shapes[0], shapes[-1]
    present = {color for _, color in shapes}
    asked = rng.choice(sorted(present)) if rng.random() < 0.5 else rng.choice(sorted(set(COLORS) - present))
    return [
        ("What shape appears first?", first_shape, "video-first-shape"),
        ("What colour is the first shape?", first_color, "video-first-color"),
        ("What shape appears last?", last_shape, "video-last-shape"),
        ("What colour is the last shape?", last_color, "video-last-color"),
        ("How many shapes are shown?", COUNT_WORDS[len(shapes)], "video-count"),
        (f"Does a {asked} shape appear?", "yes" if asked in present else "no", "video-contains"),
    ]


def pick_sequence(labelled: list[tuple[int, tuple[str, str]]], rng: random.Random) -> list[tuple[int, tuple[str, str]]]:
    """2-4 labelled images in which consecutive ones differ (so every change of frame shows a new shape)."""
    length = rng.choice(sorted(COUNT_WORDS))
    sequence = [rng.choice(labelled)]
    while len(sequence) < length:
        candidate = rng.choice(labelled)
        if candidate[1] != sequence[-1][1]:
            sequence.append(candidate)
    return sequence


def frame_runs(count: int, frames: int) -> list[int]:
    """How many of ``frames`` frames each of ``count`` images is shown for: equal runs, the first ones longer."""
    return [frames // count + (1 if i < frames % count else 0) for i in range(count)]


def write_clip(path: Path, images: list[Image.Image], *, frames: int, fps: int = 4) -> None:
    """Encode ``images`` one after another over ``frames`` frames as an H.264 MP4 at ``path`` (atomically)."""
    import av

    width, height = images[0].size
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "12", "preset": "veryfast"}  # near-lossless: colours stay recognisable
        for image, run in zip(images, frame_runs(len(images), frames)):
            pixels = np.asarray(image.convert("RGB"))  # (H, W, 3) uint8
            for _ in range(run):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())  # flush the encoder


def build_easy_vqa_video(out_dir: str | Path, splits=("train", "test"), limit: int | None = None, *,
                         frames: int = 8, seed: int = 0) -> dict:
    """Write ``limit`` clips per split (default 1,500 train / 200 test), six questions each, under ``out_dir``.

    Returns ``{"dir", "files": {name: path}, "counts": {name: records}}``.
    """
    out = Path(out_dir)
    files, counts = {}, {}
    for split in splits:
        questions, image_paths = split_questions(split)
        labelled = [(image_id, (shape, color)) for image_id, (shape, color) in image_labels(questions).items()
                    if shape and color]
        rng = random.Random(f"{seed}-{split}")
        records = []
        for clip in range(limit or DEFAULT_CLIPS[split]):
            sequence = pick_sequence(labelled, rng)
            clip_id = f"{split}-clip-{clip}"
            relative = f"videos/{split}/{clip_id}.mp4"
            if not (out / relative).is_file():  # a rerun reuses the clips already written
                (out / relative).parent.mkdir(parents=True, exist_ok=True)
                write_clip(out / relative, [Image.open(image_paths[i]) for i, _ in sequence], frames=frames)
            shapes = [list(label) for _, label in sequence]
            for index, (question, answer, kind) in enumerate(clip_questions([tuple(s) for s in shapes], rng)):
                records.append({"id": f"{clip_id}-{index}", "video": relative, "category": kind, "shapes": shapes,
                                "source_images": [i for i, _ in sequence],
                                "conversations": [{"from": "human", "value": f"<video>\n{question}"},
                                                  {"from": "gpt", "value": answer}]})
        name = f"video-{split}.jsonl"
        write_jsonl(out / name, records)
        files[name], counts[name] = str(out / name), len(records)
        logger.info("easy-VQA video %s: %d clips, %d questions", split, limit or DEFAULT_CLIPS[split], len(records))
    return {"dir": str(out), "files": files, "counts": counts}
