"""Image–caption pairs for dual-encoder training and evaluation.

`easy-vqa:train` / `easy-vqa:test` build pairs from the easy-vqa package: each image's shape and colour
are read off its questions and answers ("a blue circle"). Any other name is a JSONL file of records with
`image` (relative to the file) and `caption` — or LLaVA records whose answer is the caption, as written
by `omnilm data easy-vqa` (`shapes-caption-*.jsonl`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from omnilm.errors import OmniError

EASY_VQA_PREFIX = "easy-vqa:"


@dataclass(frozen=True)
class CaptionRecord:
    image: str  # absolute path
    caption: str
    shape: str | None = None  # easy-vqa labels, when the questions pin them down (zero-shot evaluation)
    color: str | None = None


def load_captions(spec: str, *, require_both: bool = True) -> list[CaptionRecord]:
    """Records of `easy-vqa:SPLIT` (see `easy_vqa_captions` for `require_both`) or a JSONL file."""
    if spec.startswith(EASY_VQA_PREFIX):
        return easy_vqa_captions(spec.removeprefix(EASY_VQA_PREFIX), require_both=require_both)
    return read_caption_jsonl(spec)


def easy_vqa_captions(split: str, *, require_both: bool = True) -> list[CaptionRecord]:
    """One record per easy-vqa image of `split` ("a {color} {shape}"), in image-id order.

    With `require_both=False` images whose questions reveal only the shape or only the colour are kept
    too (caption: "a {color} shape" / "a {shape}") — more images for per-attribute zero-shot accuracy.
    """
    from omnilm.data.easy_vqa import image_labels, split_questions

    questions, paths = split_questions(split)
    records = []
    for image_id, (shape, color) in image_labels(questions).items():
        if shape and color:
            caption = f"a {color} {shape}"
        elif require_both or not (shape or color):
            continue
        else:
            caption = f"a {color} shape" if color else f"a {shape}"
        records.append(CaptionRecord(str(Path(paths[image_id]).resolve()), caption, shape, color))
    return records


def read_caption_jsonl(path: str | Path) -> list[CaptionRecord]:
    path = Path(path)
    if not path.is_file():
        raise OmniError(f"caption file {path} does not exist (or use easy-vqa:train)")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            caption = row.get("caption") or row["conversations"][-1]["value"]
            image = Path(row["image"])
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise OmniError(f"{path}:{number}: expected a record with image and caption ({err})") from None
        image = image if image.is_absolute() else (path.parent / image)
        records.append(CaptionRecord(str(image.resolve()), caption.strip(), row.get("shape"), row.get("color")))
    if not records:
        raise OmniError(f"{path} holds no caption records")
    return records


def write_caption_jsonl(records: list[CaptionRecord], path: str | Path) -> Path:
    from omnilm.data.records import write_jsonl

    write_jsonl(path, [dataclasses.asdict(record) for record in records])
    return Path(path)
