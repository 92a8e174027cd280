"""Checksummed, atomic cache entries for converted packaged models.

An entry is a directory `$OMNILM_CACHE/<name>/` holding a plain transformers checkpoint and a `.complete`
marker (JSON: the fingerprint of what it was built from, and the size and sha256 of every file). It is
built in a temporary sibling directory (`omnilm.io.atomic_directory`) and moved into place only once the
marker is written, so an interrupted conversion never leaves a half-written entry under the final name. An entry
whose marker is missing, unreadable, stale (other fingerprint) or disagrees with the files is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from omnilm.errors import OmniError
from omnilm.io import atomic_directory
from omnilm.paths import cache_dir

logger = logging.getLogger(__name__)

MARKER = ".complete"
_BLOCK = 8 * 1024 * 1024  # read/hash granularity: large enough to run at memory speed


class PackagedModelError(OmniError):
    """A packaged model is unknown, not installed, corrupted or could not be converted."""


class ChecksumError(PackagedModelError):
    """A shipped chunk or a cached file does not have the size or sha256 it should."""


def _progress(total: int, desc: str, show: bool = True) -> tqdm:
    # disable=None: a bar on a terminal, silence in logs and CI.
    disable = None if show else True
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=disable, leave=False)


def sha256_file(path: Path, desc: str | None = None) -> str:
    """Hex sha256 of a file, streamed, with a progress bar when `desc` is given."""
    digest = hashlib.sha256()
    with open(path, "rb") as f, _progress(path.stat().st_size, desc or "", show=desc is not None) as bar:
        while block := f.read(_BLOCK):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def verify_file(path: Path, size: int, sha256: str, what: str) -> None:
    """Raise ChecksumError unless `path` has exactly `size` bytes and the given sha256."""
    actual_size = path.stat().st_size
    if actual_size != size:
        raise ChecksumError(f"{what}: {path} has {actual_size:,} bytes, expected {size:,}.")
    actual = sha256_file(path, desc=f"verify {path.name}")
    if actual != sha256:
        raise ChecksumError(f"{what}: {path} has sha256 {actual}, expected {sha256}.")


def concat_verified(parts: Sequence[tuple[Path, int, str]], dest: Path, sha256: str, what: str) -> Path:
    """Concatenate `(path, size, sha256)` parts into `dest`, checking each part and the whole on the fly."""
    total = sum(size for _, size, _ in parts)
    whole = hashlib.sha256()
    with open(dest, "wb") as out, _progress(total, f"assemble {dest.name}") as bar:
        for index, (path, size, part_sha) in enumerate(parts, start=1):
            if path.stat().st_size != size:
                raise ChecksumError(
                    f"{what}: chunk {index}/{len(parts)} {path} has {path.stat().st_size:,} bytes, "
                    f"expected {size:,}."
                )
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(_BLOCK):
                    digest.update(block)
                    whole.update(block)
                    out.write(block)
                    bar.update(len(block))
            if digest.hexdigest() != part_sha:
                raise ChecksumError(
                    f"{what}: chunk {index}/{len(parts)} {path} has sha256 {digest.hexdigest()}, "
                    f"expected {part_sha}."
                )
    if whole.hexdigest() != sha256:
        raise ChecksumError(f"{what}: assembled file has sha256 {whole.hexdigest()}, expected {sha256}.")
    return dest


def _file_table(entry: Path) -> dict[str, dict]:
    """Size and sha256 of every file under `entry` (the marker excluded), keyed by relative path."""
    table = {}
    for path in sorted(p for p in entry.rglob("*") if p.is_file() and p.name != MARKER):
        rel = path.relative_to(entry).as_posix()
        table[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return table


def entry_status(entry: Path, fingerprint: dict, verify: bool = False) -> str:
    """'complete', or why the entry cannot be used: 'missing', 'no marker', 'stale', 'damaged: ...'.

    Sizes are always checked; `verify=True` also re-hashes every file (about 1 s per GB).
    """
    if not entry.is_dir():
        return "missing"
    try:
        marker = json.loads((entry / MARKER).read_text())
    except (OSError, ValueError):
        return "no marker"
    if marker.get("fingerprint") != fingerprint:
        return "stale"
    files = marker.get("files") or {}
    for rel, info in files.items():
        path = entry / rel
        if not path.is_file() or path.stat().st_size != info["size"]:
            return f"damaged: {rel} is missing or has the wrong size"
        if verify and sha256_file(path, desc=f"verify {rel}") != info["sha256"]:
            return f"damaged: {rel} has the wrong sha256"
    return "complete" if files else "damaged: marker lists no files"


def tidy_tokenizer_config(entry: Path) -> None:
    """Drop the loader flags transformers records in a saved tokenizer_config.json (`local_files_only`, ...).

    They describe how the source was read, and would otherwise be replayed on every load of the copy.
    """
    path = entry / "tokenizer_config.json"
    if path.is_file():
        config = json.loads(path.read_text())
        dropped = [config.pop(key) for key in ("is_local", "local_files_only", "gguf_file") if key in config]
        if dropped:
            path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def _locked(root: Path, name: str) -> Iterator[None]:
    """Hold an exclusive lock on `name` so that two processes never convert it at once (POSIX only)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; os.replace still keeps entries whole
        yield
        return
    with open(root / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def build_entry(name: str, fingerprint: dict, build: Callable[[Path], None], verify: bool = False) -> Path:
    """Return the complete cache entry `name`, building it with `build(tmp_dir)` when it is not usable.

    `build` writes a checkpoint into `tmp_dir` (scratch files go in `tmp_dir / ".work"`, removed after).
    """
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    entry = root / name
    if entry_status(entry, fingerprint, verify) == "complete":
        return entry
    with _locked(root, name):
        status = entry_status(entry, fingerprint, verify)  # another process may have just built it
        if status == "complete":
            return entry
        if status != "missing":
            logger.warning("Cache entry %s is unusable (%s); rebuilding it.", entry, status)
        for leftover in [*root.glob(f".{name}.tmp-*"), *root.glob(f".{name}.old-*")]:  # from killed conversions
            shutil.rmtree(leftover, ignore_errors=True)
        with atomic_directory(entry) as tmp:
            build(tmp)
            shutil.rmtree(tmp / ".work", ignore_errors=True)
            tidy_tokenizer_config(tmp)
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp made it private
            marker = {"fingerprint": fingerprint, "files": _file_table(tmp)}
            (tmp / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True))
    logger.info("Cached %s in %s", name, entry)
    return entry
