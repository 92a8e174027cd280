"""SPICE through the ``spice-1.0.jar`` that ``pycocoevalcap`` ships, where it can run.

SPICE parses captions into scene graphs with Stanford CoreNLP 3.6.0, whose jars are not in the package:
pycocoevalcap downloads them from nlp.stanford.edu at first use. omnilm never downloads them implicitly;
:func:`spice_unavailable` says what is missing and where to put it.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import tempfile
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

from omnilm.metrics._java import PIP_HINT, java_problem, pycocoevalcap_dir

logger = logging.getLogger(__name__)

CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
CORENLP_URL = "http://nlp.stanford.edu/software/stanford-corenlp-full-2015-12-09.zip"


def spice_jar() -> Path | None:
    """Path of pycocoevalcap's SPICE jar, or None when the package is not installed."""
    root = pycocoevalcap_dir()
    jar = root / "spice" / "spice-1.0.jar" if root else None
    return jar if jar is not None and jar.is_file() else None


def spice_unavailable() -> str | None:
    """None when SPICE can run here, otherwise the reason (with what to do about it)."""
    jar = spice_jar()
    if jar is None:
        return f"SPICE needs spice-1.0.jar from the pycocoevalcap package: {PIP_HINT}"
    missing = [name for name in CORENLP_JARS if not (jar.parent / "lib" / name).is_file()]
    if missing:
        return (
            f"SPICE needs the Stanford CoreNLP 3.6.0 jars ({', '.join(missing)}) in {jar.parent / 'lib'}; "
            f"they are not shipped with pycocoevalcap and cannot be downloaded offline. Extract them from "
            f"{CORENLP_URL} (or run `python -m pycocoevalcap.spice.get_stanford_models` where the internet is "
            f"reachable)"
        )
    return java_problem()


def spice(
    hypotheses: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]], timeout: float = 3600.0
) -> tuple[float, dict[Hashable, float]]:
    """Mean SPICE F-score and per-item scores; raises RuntimeError with the reason when it cannot run."""
    problem = spice_unavailable()
    if problem:
        raise RuntimeError(problem)
    keys = list(hypotheses)
    if not keys:
        return 0.0, {}
    jar = spice_jar()
    items = [{"image_id": i, "test": hypotheses[key], "refs": list(references[key])} for i, key in enumerate(keys)]
    with tempfile.TemporaryDirectory(prefix="omnilm-spice-") as tmp:
        in_path, out_path = Path(tmp) / "in.json", Path(tmp) / "out.json"
        in_path.write_text(json.dumps(items))
        command = [shutil.which("java"), "-jar", "-Xmx8G", jar.name, str(in_path), "-out", str(out_path), "-subset",
                   "-silent"]
        result = subprocess.run(command, cwd=jar.parent, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0 or not out_path.is_file():
            raise RuntimeError(f"the SPICE jar failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
        results = json.loads(out_path.read_text())
    by_index = {item["image_id"]: _as_float(item["scores"]["All"]["f"]) for item in results}
    per_item = {key: by_index[i] for i, key in enumerate(keys)}
    valid = [v for v in per_item.values() if not math.isnan(v)]
    return (sum(valid) / len(valid) if valid else math.nan), per_item


def _as_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
