"""Locating Java and the jars that the ``pycocoevalcap`` package ships."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

PIP_HINT = "install it with `pip install pycocoevalcap` (the `eval` extra: `pip install omnilm[eval]`)"


@lru_cache(maxsize=1)
def java_problem() -> str | None:
    """None when a working ``java`` is on PATH, otherwise the reason it cannot be used."""
    java = shutil.which("java")
    if java is None:
        return "Java is not installed (no `java` on PATH); install a JRE, e.g. `apt-get install default-jre-headless`"
    try:
        subprocess.run([java, "-version"], capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        return f"`java -version` failed ({error}); check the Java installation"
    return None


def pycocoevalcap_dir() -> Path | None:
    """Directory of the installed ``pycocoevalcap`` package, or None."""
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))
