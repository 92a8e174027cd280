"""Where omnilm keeps what it builds once: `$OMNILM_CACHE` (default `~/.cache/omnilm`), read in one place."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The omnilm cache (`$OMNILM_CACHE`, default `~/.cache/omnilm`), or a folder under it (not created)."""
    root = Path(os.environ.get("OMNILM_CACHE") or Path.home() / ".cache" / "omnilm").expanduser()
    return root.joinpath(*parts)
