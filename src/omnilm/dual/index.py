"""An image-search index on disk: every image under a folder embedded by a dual encoder.

INDEX/ holds `manifest.json` (model name and identity, root folder, one `[path, size, mtime_ns]` per
vector), `vectors.npy` (N, D) float32 unit vectors and, from `ann_threshold` vectors on, `ann.faiss` (an
HNSW graph); smaller indexes are searched exactly. Re-running a build embeds only new or changed files
(size or mtime differ) and drops deleted ones. Every write replaces the whole directory atomically, and
long builds commit their progress every `commit_every` images, so an interrupted build leaves a usable
index (the old one, or old + part of the new) and the next run carries on.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from omnilm.dual.ann import BACKENDS, exact_search
from omnilm.errors import MediaError, OmniError
from omnilm.io import atomic_directory

logger = logging.getLogger(__name__)

FORMAT = 1
MANIFEST, VECTORS = "manifest.json", "vectors.npy"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
ANN_THRESHOLD = 20_000  # below this many vectors exact search takes a few ms: no graph needed


class IndexModelMismatch(OmniError):
    """The index was built with another model: its vectors and the query's are not comparable."""


@dataclass
class SearchHit:
    path: str  # absolute path of the image
    score: float  # cosine similarity to the query


@dataclass
class BuildReport:
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)  # unreadable images (warned by name)
    total: int = 0
    seconds: float = 0.0
    backend: str = "exact"


class ImageIndex:
    def __init__(self, directory: Path, manifest: dict[str, Any], vectors: np.ndarray, ann=None) -> None:
        self.directory, self.manifest, self.vectors, self.ann = directory, manifest, vectors, ann

    @classmethod
    def open(cls, directory: str | Path) -> ImageIndex:
        directory = Path(directory)
        if not (directory / MANIFEST).is_file():
            raise OmniError(f"{directory} is not an image index; build one with `omnilm index DIR --model REF "
                            f"--out {directory}`")
        manifest = json.loads((directory / MANIFEST).read_text())
        if manifest.get("format") != FORMAT:
            raise OmniError(f"{directory}: index format {manifest.get('format')} is not {FORMAT}; rebuild it")
        vectors = np.load(directory / VECTORS)
        ann = None
        if manifest.get("ann"):
            backend = BACKENDS[manifest["ann"]["backend"]]
            ann = backend.from_bytes((directory / manifest["ann"]["file"]).read_bytes())
        return cls(directory, manifest, vectors, ann)

    def __len__(self) -> int:
        return len(self.manifest["files"])

    @property
    def root(self) -> Path:
        return Path(self.manifest["root"])

    @property
    def model_name(self) -> str:
        return self.manifest["model"]["name"]

    def check_model(self, model) -> None:
        """Refuse a model other than the one that built the index (its vectors live in another space)."""
        built = self.manifest["model"]
        if model.identity != built["identity"]:
            raise IndexModelMismatch(
                f"index {self.directory} was built with model {built['name']} (identity {built['identity'][:12]}); "
                f"the query model {model.name} (identity {model.identity[:12]}) embeds into a different space, so "
                f"scores would be meaningless. Search with that model, or rebuild the index: "
                f"omnilm index {self.root} --model {model.name} --out {self.directory} --rebuild")

    def search_vectors(self, queries: np.ndarray, k: int = 5, *, exact: bool = False) -> list[list[SearchHit]]:
        """Top-k images for each query vector (Q, D): the HNSW graph when built, else exact."""
        if self.ann is not None and not exact:
            scores, ids = self.ann.search(queries, min(k, len(self)))
        else:
            scores, ids = exact_search(self.vectors, queries, k)
        files = self.manifest["files"]
        return [[SearchHit(str(self.root / files[i][0]), float(s)) for s, i in zip(row_s, row_i) if i >= 0]
                for row_s, row_i in zip(scores, ids)]

    def search_text(self, model, text: str, k: int = 5) -> list[SearchHit]:
        self.check_model(model)
        return self.search_vectors(model.embed_texts([text]), k)[0]

    def search_image(self, model, image: Any, k: int = 5) -> list[SearchHit]:
        """Images most like `image` (a path, bytes, data URL or PIL image)."""
        self.check_model(model)
        return self.search_vectors(model.embed_images([image]), k)[0]


def scan_images(root: Path) -> dict[str, tuple[int, int]]:
    """Relative POSIX path → (size, mtime_ns) of every image file under `root` (hidden entries skipped)."""
    found = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.is_file():
            stat = path.stat()
            found[relative.as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return found


def build_index(root: str | Path, model, out: str | Path, *, batch_size: int = 32, commit_every: int = 2048,
                ann: str = "auto", ann_threshold: int = ANN_THRESHOLD, rebuild: bool = False,
                progress: bool = True) -> BuildReport:
    """Create or update the index `out` of the images under `root` with dual encoder `model`."""
    started = time.perf_counter()
    root = Path(root).resolve()
    if not root.is_dir():
        raise OmniError(f"{root} is not a directory of images")
    if ann != "auto" and ann != "exact" and ann not in BACKENDS:
        raise OmniError(f"unknown ANN backend {ann!r}; choose auto, exact or one of {sorted(BACKENDS)}")
    files, vectors, old = [], np.zeros((0, model.dim), np.float32), None
    if (Path(out) / MANIFEST).is_file() and not rebuild:
        old = ImageIndex.open(out)
        if old.manifest["model"]["identity"] != model.identity or old.root != root:
            raise OmniError(f"{out} was built from {old.root} with model {old.model_name}; pass --rebuild to "
                            f"replace it with an index of {root} by {model.name}, or choose another --out")
        files, vectors = old.manifest["files"], old.vectors
    current = scan_images(root)
    report = BuildReport()
    keep = [i for i, (path, size, mtime) in enumerate(files) if current.get(path) == (size, mtime)]
    known = {files[i][0] for i in keep}
    old_paths = {f[0] for f in files}
    todo = [path for path in current if path not in known]
    report.unchanged = len(keep)
    report.removed = len(old_paths - set(current))
    files, vectors = [files[i] for i in keep], vectors[keep]
    logger.info("%s: %d images, %d to embed, %d unchanged, %d removed", root, len(current), len(todo),
                len(keep), report.removed)

    pending_files, pending_vectors = [], []
    bar = tqdm(total=len(todo), desc="indexing", unit="img", disable=not progress)
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        readable, pixels = [], []
        for path in batch:
            try:
                pixels.append(model.processor.image(root / path))
                readable.append(path)
            except MediaError as err:
                logger.warning("skipping unreadable image %s: %s", root / path, err)
                report.skipped.append(str(root / path))
        if pixels:
            pending_vectors.append(_embed_pixels(model, pixels))
            for path in readable:
                report.updated += path in old_paths
                report.added += path not in old_paths
                pending_files.append([path, *current[path]])
        bar.update(len(batch))
        if len(pending_files) >= commit_every:  # commit progress: an interruption keeps what is done
            files, vectors = files + pending_files, np.concatenate([vectors, *pending_vectors])
            pending_files, pending_vectors = [], []
            _write(out, root, model, files, vectors, ann="exact", ann_threshold=ann_threshold)
    bar.close()
    files, vectors = files + pending_files, np.concatenate([vectors, *pending_vectors]) if pending_vectors else vectors
    want_graph = ann != "exact" and len(files) >= ann_threshold
    if old is not None and not (report.added or report.updated or report.removed) and \
            want_graph == (old.ann is not None) and len(files) == len(old):
        report.backend = old.manifest["ann"]["backend"] if old.ann is not None else "exact"  # nothing changed
    else:
        report.backend = _write(out, root, model, files, vectors, ann=ann, ann_threshold=ann_threshold)
    report.total, report.seconds = len(files), time.perf_counter() - started
    return report


def _embed_pixels(model, pixels: list) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model.model.encode_images(torch.stack(pixels).to(model.device)).float().cpu().numpy()  # (B, D)


def _write(out: str | Path, root: Path, model, files: list, vectors: np.ndarray, *, ann: str,
           ann_threshold: int) -> str:
    """Replace the index directory atomically; build the HNSW graph when asked and the index is big enough."""
    backend = None
    if ann != "exact" and len(files) >= ann_threshold:
        backend = BACKENDS["faiss" if ann == "auto" else ann].build(vectors)
    name = str(Path(model.name).resolve()) if Path(model.name).is_dir() else model.name  # usable from any directory
    manifest = {"format": FORMAT, "model": {"name": name, "identity": model.identity, "dim": model.dim},
                "root": str(root), "files": files, "ann": None,
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with atomic_directory(out) as staging:
        np.save(staging / VECTORS, np.ascontiguousarray(vectors, dtype=np.float32))
        if backend is not None:
            (staging / f"ann.{backend.name}").write_bytes(backend.to_bytes())
            manifest["ann"] = {"backend": backend.name, "file": f"ann.{backend.name}"}
        (staging / MANIFEST).write_text(json.dumps(manifest))
    return backend.name if backend is not None else "exact"
