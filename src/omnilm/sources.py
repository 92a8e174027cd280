"""Turn a part's source (hub id, local directory, `pkg:` reference) into something `from_pretrained` reads."""

from __future__ import annotations

from pathlib import Path

PACKAGED_PREFIX = "pkg:"


def resolve_source(ref: str, base_dir: str | Path | None = None) -> str:
    """Return a local directory or hub id for `ref`.

    `pkg:NAME` is converted once into the omnilm cache; `./relative` paths are taken relative to
    `base_dir` (the checkpoint that names them); anything else is passed through to transformers.
    """
    if ref.startswith(PACKAGED_PREFIX):
        from omnilm.packaged import resolve  # local import: only needed for packaged weights

        return str(resolve(ref))
    if base_dir is not None and ref.startswith(("./", "../")):
        return str((Path(base_dir) / ref).resolve())
    return ref
