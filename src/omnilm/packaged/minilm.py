"""all-MiniLM-L6-v2: the package already ships a transformers directory; copy it into the cache."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link when the cache is on the same filesystem (no extra disk), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def convert(inputs: dict[str, Path], out: Path) -> None:
    """Put the shipped model directory (config, tokenizer, safetensors, pooling config) into `out`."""
    source = inputs["model.safetensors"].parent
    shutil.copytree(source, out, dirs_exist_ok=True, copy_function=_link_or_copy, ignore=_skip)


def _skip(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n == "__pycache__" or n.startswith(".")}
