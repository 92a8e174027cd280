"""easy-VQA video clips (omnilm.data.easy_vqa_video): splits kept apart, answers that match the frames."""

import itertools
import random
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from omnilm.data.easy_vqa import split_questions
from omnilm.data.easy_vqa_video import build_easy_vqa_video, clip_questions, frame_runs, pick_sequence
from omnilm.data.records import read_jsonl
from omnilm.media import load_video

pytest.importorskip("easy_vqa")


def test_frame_runs_cover_every_frame_with_equal_runs():
    assert frame_runs(3, 8) == [3, 3, 2]
    assert frame_runs(4, 8) == [2, 2, 2, 2]
    assert sum(frame_runs(3, 10)) == 10


def test_questions_are_answered_from_the_order_count_and_colours():
    shapes = [("circle", "red"), ("triangle", "blue"), ("circle", "green")]
    asked = clip_questions(shapes, random.Random(0))
    answers = {kind: answer for _, answer, kind in asked}
    assert answers["video-first-shape"] == "circle" and answers["video-first-color"] == "red"
    assert answers["video-last-shape"] == "circle" and answers["video-last-color"] == "green"
    assert answers["video-count"] == "three"
    contains = next(question for question, _, kind in asked if kind == "video-contains")
    assert (contains.split()[2] in {"red", "blue", "green"}) == (answers["video-contains"] == "yes")
    yes = Counter(clip_questions(shapes, random.Random(seed))[-1][1] for seed in range(200))
    assert 70 < yes["yes"] < 130  # about half the colour questions name a colour that is shown


def test_consecutive_images_of_a_sequence_differ():
    labelled = [(i, (shape, color)) for i, (shape, color) in enumerate([("circle", "red"), ("circle", "blue")] * 3)]
    rng = random.Random(1)
    for _ in range(50):
        sequence = pick_sequence(labelled, rng)
        assert 2 <= len(sequence) <= 4
        assert all(a[1] != b[1] for a, b in itertools.pairwise(sequence))


def nearest_images(frames: list[Image.Image], candidates: dict[int, np.ndarray]) -> list[int]:
    """For each decoded frame, the id of the source image it shows (smallest mean absolute difference; it must
    be close to exact: the clip is encoded near-losslessly)."""
    shown = []
    for frame in frames:
        distance = {i: np.abs(np.asarray(frame, dtype=np.int16) - image).mean() for i, image in candidates.items()}
        best = min(distance, key=distance.get)
        assert distance[best] < 4, f"frame matches no source image (closest differs by {distance[best]:.1f})"
        shown.append(best)
    return shown


def test_clips_show_their_images_in_order_and_test_clips_use_only_test_images(tmp_path):
    result = build_easy_vqa_video(tmp_path, limit=3)
    train, test = (read_jsonl(tmp_path / f"video-{s}.jsonl") for s in ("train", "test"))
    assert len(train) == len(test) == 3 * 6
    for split, records in (("train", train), ("test", test)):
        _, paths = split_questions(split)
        for record in records[::6]:  # one per clip
            sources = {i: np.asarray(Image.open(paths[i]).convert("RGB"), dtype=np.int16) for i in set(record["source_images"])}
            others = {i: np.asarray(Image.open(paths[i]).convert("RGB"), dtype=np.int16)
                      for i in range(40) if i not in sources}  # decoys: other images of the same split
            frames = load_video(str(tmp_path / record["video"]), num_frames=8)
            shown = nearest_images(frames, {**sources, **others})
            runs = frame_runs(len(record["source_images"]), 8)
            assert shown == [i for i, run in zip(record["source_images"], runs) for _ in range(run)]
    before = (tmp_path / test[0]["video"]).stat().st_mtime_ns
    assert build_easy_vqa_video(tmp_path, limit=3)["counts"] == result["counts"]  # a rerun reuses the clips
    assert (tmp_path / test[0]["video"]).stat().st_mtime_ns == before
    assert read_jsonl(tmp_path / "video-test.jsonl") == test
