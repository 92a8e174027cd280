"""Record offsets of big JSON files, found by a vectorised byte scan and cached, so no record is parsed.

A JSONL file's records are its non-blank lines; a JSON array's records are its top-level elements
(LLaVA ships ``blip_laion_cc_sbu_558k.json`` and ``llava_v1_5_mix665k.json`` as arrays). The scan reads
the file in blocks with numpy: newlines for JSONL; for an array, the structural bytes (quotes that no odd
run of backslashes escapes, and brackets outside strings), whose running depth marks where each element
opens and closes. The (start, end) byte offsets go into ``$OMNILM_CACHE/data-index/<key>.npy`` keyed by
the file's path, size and modification time, and are read back memory-mapped: a million records cost
16 MB of page cache and no Python objects.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from omnilm.errors import OmniError
from omnilm.io import atomic_path
from omnilm.paths import cache_dir

logger = logging.getLogger(__name__)

BLOCK = 1 << 24  # bytes scanned at a time (16 MiB)
_QUOTE, _BACKSLASH, _OPEN, _CLOSE = ord('"'), ord("\\"), (ord("{"), ord("[")), (ord("}"), ord("]"))


def record_offsets(path: str | Path, *, kind: str, cache: Path | None = None) -> np.ndarray:
    """(N, 3) int64 rows [start, end, line] of each record of a ``jsonl`` or ``json`` (array) file: the
    byte span of the record and the 1-based line it starts on (for ``file:line`` messages)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = hashlib.sha256(f"{kind}|{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:32]
    cached = (cache or cache_dir("data-index")) / f"{key}.npy"
    if cached.is_file():
        return np.load(cached, mmap_mode="r")
    scan = _jsonl_offsets if kind == "jsonl" else _array_offsets
    offsets = scan(path)
    with atomic_path(cached) as tmp:
        np.save(tmp, offsets)
    logger.info("indexed %d records of %s (cached in %s)", len(offsets), path, cached)
    return np.load(cached, mmap_mode="r")


def _blocks(path: Path):
    """(offset, uint8 array) of each block of the file."""
    with path.open("rb") as handle:
        offset = 0
        while block := handle.read(BLOCK):
            yield offset, np.frombuffer(block, dtype=np.uint8)
            offset += len(block)


def _jsonl_offsets(path: Path) -> np.ndarray:
    """Offsets of the non-blank lines (a line of only whitespace is skipped, as the JSONL reader does)."""
    ends = [np.flatnonzero(block == 10) + offset for offset, block in _blocks(path)]  # 10: '\n'
    newlines = np.concatenate(ends) if ends else np.zeros(0, np.int64)
    size = path.stat().st_size
    starts = np.concatenate([[0], newlines + 1]).astype(np.int64)
    stops = np.concatenate([newlines, [size]]).astype(np.int64)
    lines = np.stack([starts, stops, np.arange(1, len(starts) + 1)], axis=1)
    lines = lines[lines[:, 1] > lines[:, 0]]
    if not len(lines):
        return lines.reshape(0, 3)
    with path.open("rb") as handle:  # drop whitespace-only lines (rare: only short lines are read back)
        short = np.flatnonzero(lines[:, 1] - lines[:, 0] < 8)
        blank = []
        for i in short:
            handle.seek(int(lines[i, 0]))
            if not handle.read(int(lines[i, 1] - lines[i, 0])).strip():
                blank.append(i)
    return np.delete(lines, blank, axis=0)


def _array_offsets(path: Path) -> np.ndarray:
    """Offsets of the top-level elements of a JSON array (each an object or array)."""
    starts, ends, lines = [], [], []
    in_string, depth, backslashes = False, 0, 0  # state carried across blocks
    seen_open, newlines_before = False, 0
    for offset, block in _blocks(path):
        newlines = np.flatnonzero(block == 10)
        special = np.flatnonzero((block == _QUOTE) | (block == _BACKSLASH) | (block == _OPEN[0])
                                 | (block == _OPEN[1]) | (block == _CLOSE[0]) | (block == _CLOSE[1]))
        if not len(special):
            newlines_before += len(newlines)
            continue
        values = block[special]
        # A quote is escaped by an odd run of backslashes right before it: runs are consecutive positions.
        is_bs = values == _BACKSLASH
        run = _backslash_runs(special, is_bs, backslashes)
        quote = (values == _QUOTE) & (run % 2 == 0)
        inside = (np.cumsum(quote) + in_string) % 2 == 1  # after each position: inside a string?
        was_inside = np.concatenate([[in_string], inside[:-1]])
        opens = np.isin(values, _OPEN) & ~was_inside
        closes = np.isin(values, _CLOSE) & ~was_inside
        step = opens.astype(np.int64) - closes.astype(np.int64)
        level = depth + np.cumsum(step)  # depth after each position
        if not seen_open:
            first = np.flatnonzero(opens)
            if len(first) and values[first[0]] != _OPEN[1]:
                raise OmniError(f"{path}: not a JSON array of records (it starts with an object); "
                                "give a .jsonl file of one record a line, or a JSON array")
            seen_open = seen_open or bool(len(first))
        opened = special[opens & (level == 2)]
        starts.append(opened + offset)
        lines.append(np.searchsorted(newlines, opened) + newlines_before + 1)
        newlines_before += len(newlines)
        ends.append(special[closes & (level == 1)] + offset + 1)
        if (level < 0).any():
            raise OmniError(f"{path}: malformed JSON (an unbalanced bracket near byte {offset + special[level < 0][0]})")
        in_string, depth = bool(inside[-1]), int(level[-1])
        trailing = len(block) - 1
        backslashes = int(run[-1] + 1) if is_bs[-1] and special[-1] == trailing else 0
    start, end, line = (np.concatenate(parts) if parts else np.zeros(0, np.int64) for parts in (starts, ends, lines))
    if depth != 0 or in_string or len(start) != len(end):
        raise OmniError(f"{path}: malformed JSON array (it ends inside a record: truncated file?)")
    return np.stack([start, end, line], axis=1).astype(np.int64)


def _backslash_runs(positions: np.ndarray, is_bs: np.ndarray, carried: int) -> np.ndarray:
    """For each special byte: how many backslashes come right before it (consecutive, unbroken)."""
    # A backslash continues a run when the previous special byte is a backslash at the position just before.
    previous_adjacent = np.concatenate([[False], (np.diff(positions) == 1) & is_bs[:-1]])
    run = np.zeros(len(positions), np.int64)
    count = carried if positions[0] == 0 else 0
    # Runs are short and rare (escapes inside text): walk only the positions that follow a backslash.
    for i in np.flatnonzero(previous_adjacent | ((np.arange(len(positions)) == 0) & (count > 0))):
        if i == 0:
            run[0] = count
        else:
            run[i] = run[i - 1] + 1 if previous_adjacent[i] else 0
    return run


def read_span(handle, start: int, end: int) -> bytes:
    """The bytes [start, end) of an open binary file."""
    handle.seek(start)
    return handle.read(end - start)


def reopen(path: Path, handles: dict) -> object:
    """A binary handle of `path` for this process (DataLoader workers are forked: each opens its own)."""
    key = (os.getpid(), str(path))
    handle = handles.get(key)
    if handle is None:
        handles.clear()
        handle = handles[key] = path.open("rb")
    return handle
