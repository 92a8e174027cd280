"""Image-search index: queries, incremental updates, interrupted builds, unreadable files, model identity."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

import omnilm
from omnilm.dual import index as index_module
from omnilm.dual.ann import exact_search
from omnilm.dual.index import ImageIndex, IndexModelMismatch, build_index
from omnilm.dual.testing import tiny_dual, train_toy_dual, write_shape_images
from omnilm.errors import OmniError

COUNT = 240


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return omnilm.load(train_toy_dual(tmp_path_factory.mktemp("toy")))


@pytest.fixture
def photos(tmp_path):
    write_shape_images(tmp_path / "photos", COUNT, seed=1)
    return tmp_path / "photos"


def _count_embedded(monkeypatch) -> dict:
    seen = {"images": 0, "batches": 0}
    original = index_module._embed_pixels

    def counting(model, pixels):
        seen["images"] += len(pixels)
        seen["batches"] += 1
        return original(model, pixels)

    monkeypatch.setattr(index_module, "_embed_pixels", counting)
    return seen


def test_index_answers_text_and_image_queries(trained, photos, tmp_path):
    report = build_index(photos, trained, tmp_path / "idx", progress=False)
    assert (report.added, report.total, report.backend) == (COUNT, COUNT, "exact")
    index = ImageIndex.open(tmp_path / "idx")
    hits = index.search_text(trained, "a red disc", k=5)
    assert len(hits) == 5 and all("-red-disc" in h.path for h in hits), hits
    assert hits[0].score >= hits[-1].score
    query = next(photos.glob("*-blue-square.png"))
    by_image = index.search_image(trained, query, k=3)
    assert by_image[0].path == str(query) and by_image[0].score == pytest.approx(1.0, abs=1e-4)
    assert len(index.search_text(trained, "a red disc", k=10_000)) == COUNT


def test_rerun_embeds_only_new_and_changed_files_and_drops_deleted(trained, photos, tmp_path, monkeypatch):
    build_index(photos, trained, tmp_path / "idx", progress=False)
    seen = _count_embedded(monkeypatch)
    assert build_index(photos, trained, tmp_path / "idx", progress=False).unchanged == COUNT
    assert seen["images"] == 0
    write_shape_images(tmp_path / "more", 5, seed=7)
    for path in (tmp_path / "more").iterdir():
        path.rename(photos / f"new-{path.name}")
    changed = sorted(photos.glob("0*.png"))[0]
    changed.write_bytes(next(photos.glob("*-yellow-disc.png")).read_bytes())  # now a yellow disc
    os.utime(changed, ns=(1, 1))
    deleted = sorted(photos.glob("0*.png"))[1:4]
    for path in deleted:
        path.unlink()
    report = build_index(photos, trained, tmp_path / "idx", progress=False)
    assert (report.added, report.updated, report.removed, report.total) == (5, 1, 3, COUNT + 2)
    assert seen["images"] == 6
    index = ImageIndex.open(tmp_path / "idx")
    assert len(index) == COUNT + 2 and index.vectors.shape == (COUNT + 2, trained.dim)
    assert not {p.name for p in deleted} & {entry[0] for entry in index.manifest["files"]}
    top = index.search_image(trained, changed, k=1)[0]
    assert top.score == pytest.approx(1.0, abs=1e-4)  # the changed file was re-embedded


def test_interrupted_build_leaves_a_usable_index(trained, photos, tmp_path, monkeypatch):
    build_index(photos, trained, tmp_path / "idx", progress=False)
    before = ImageIndex.open(tmp_path / "idx").vectors.copy()
    write_shape_images(tmp_path / "more", 120, seed=3)
    for path in (tmp_path / "more").iterdir():
        path.rename(photos / f"new-{path.name}")
    seen = _count_embedded(monkeypatch)
    original = index_module._embed_pixels

    def dies_on_third_batch(model, pixels):
        if seen["batches"] == 2:
            raise KeyboardInterrupt
        return original(model, pixels)

    monkeypatch.setattr(index_module, "_embed_pixels", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):  # without a commit yet: the old index stays as it was
        build_index(photos, trained, tmp_path / "idx", batch_size=16, commit_every=1000, progress=False)
    old = ImageIndex.open(tmp_path / "idx")
    assert np.array_equal(old.vectors, before) and len(old.search_text(trained, "a red disc", 3)) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".idx")]  # no staging left behind

    seen["batches"] = 0
    with pytest.raises(KeyboardInterrupt):  # committing every 16 images: the two batches done are kept
        build_index(photos, trained, tmp_path / "idx", batch_size=16, commit_every=16, progress=False)
    partial = ImageIndex.open(tmp_path / "idx")
    assert len(partial) == COUNT + 32
    assert len(partial.search_text(trained, "a red disc", 3)) == 3

    monkeypatch.setattr(index_module, "_embed_pixels", original)
    seen = _count_embedded(monkeypatch)
    report = build_index(photos, trained, tmp_path / "idx", batch_size=16, progress=False)
    assert seen["images"] == 120 - 32 and report.total == COUNT + 120


def test_failed_write_keeps_the_old_index(trained, photos, tmp_path, monkeypatch):
    build_index(photos, trained, tmp_path / "idx", progress=False)
    next(photos.glob("*.png")).unlink()

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(index_module.np, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        build_index(photos, trained, tmp_path / "idx", progress=False)
    monkeypatch.undo()
    assert len(ImageIndex.open(tmp_path / "idx")) == COUNT


def test_unreadable_images_are_skipped_with_a_warning_naming_them(trained, photos, tmp_path, caplog):
    (photos / "broken.png").write_bytes(b"this is not a png")
    good = next(photos.glob("*.png")).read_bytes()
    (photos / "sub").mkdir()
    (photos / "sub" / "truncated.png").write_bytes(good[: len(good) // 2])
    (photos / "notes.txt").write_text("not an image, not even tried")
    with caplog.at_level(logging.WARNING, logger="omnilm.dual.index"):
        report = build_index(photos, trained, tmp_path / "idx", progress=False)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "broken.png" in warned and "truncated.png" in warned and "notes.txt" not in warned
    assert sorted(os.path.basename(p) for p in report.skipped) == ["broken.png", "truncated.png"]
    assert report.total == COUNT


def test_index_refuses_queries_from_another_model(trained, photos, tmp_path):
    build_index(photos, trained, tmp_path / "idx", progress=False)
    index = ImageIndex.open(tmp_path / "idx")
    other = tiny_dual(seed=1, name="other-model")
    with pytest.raises(IndexModelMismatch, match="other-model") as err:
        index.search_text(other, "a red disc")
    assert "rebuild" in str(err.value) and trained.name in str(err.value)
    with pytest.raises(IndexModelMismatch):
        index.search_image(other, next(photos.glob("*.png")))
    with pytest.raises(OmniError, match="--rebuild"):
        build_index(photos, other, tmp_path / "idx", progress=False)
    assert build_index(photos, other, tmp_path / "idx", rebuild=True, progress=False).total == COUNT
    with pytest.raises(IndexModelMismatch):
        ImageIndex.open(tmp_path / "idx").search_text(trained, "a red disc")


def test_hnsw_graph_agrees_with_exact_search(trained, photos, tmp_path):
    pytest.importorskip("faiss")
    report = build_index(photos, trained, tmp_path / "idx", ann_threshold=100, progress=False)
    assert report.backend == "faiss"
    index = ImageIndex.open(tmp_path / "idx")
    assert index.ann is not None and len(index.ann) == COUNT
    queries = trained.embed_texts(["a red disc", "a blue square", "a yellow disc"])
    for graph, exact in zip(index.search_vectors(queries, 5), index.search_vectors(queries, 5, exact=True)):
        assert graph[0].path == exact[0].path or graph[0].score == pytest.approx(exact[0].score, abs=1e-5)


def test_exact_search_matches_a_full_sort():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    queries = rng.normal(size=(3, 8)).astype(np.float32)
    scores, ids = exact_search(vectors, queries, 5)
    assert np.array_equal(ids, np.argsort(-(queries @ vectors.T), axis=1)[:, :5])
    assert exact_search(vectors, queries, 500)[1].shape == (3, 50)


def test_cli_index_and_search(trained, photos, tmp_path, capsys):
    from omnilm.cli.main import main

    checkpoint = trained.save(tmp_path / "model")
    assert main(["index", str(photos), "--model", str(checkpoint), "--out", str(tmp_path / "idx")]) == 0
    assert f"{COUNT} images ({COUNT} added" in capsys.readouterr().out
    assert main(["search", str(tmp_path / "idx"), "a red disc", "--k", "3", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3 and all("-red-disc" in line["path"] for line in lines)
    query = next(photos.glob("*-green-square.png"))
    assert main(["search", str(tmp_path / "idx"), "--image", str(query), "--k", "1"]) == 0
    assert str(query) in capsys.readouterr().out
    assert main(["search", str(tmp_path / "idx")]) == 2  # neither text nor --image
    assert "give a text QUERY or --image" in capsys.readouterr().err
    assert main(["search", str(tmp_path / "nowhere"), "x"]) == 2
    assert "not an image index" in capsys.readouterr().err
