"""METEOR 1.5, exactly: the ``meteor-1.5.jar`` that ``pycocoevalcap`` ships, run through Java.

The jar runs in ``-stdio`` mode with the COCO settings (``-l en -norm``). Each hypothesis is sent as a
``SCORE ||| ref1 ||| ref2 ||| hyp`` line, which returns sufficient statistics; one ``EVAL`` line with all
statistics returns the per-item scores and the corpus score (computed from the summed statistics, not the
mean of the per-item scores). Without Java or the jar there is no METEOR: :func:`meteor_unavailable`
says why; nothing is approximated.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

from omnilm.metrics._java import PIP_HINT, java_problem, pycocoevalcap_dir

logger = logging.getLogger(__name__)

JAR_NAME = "meteor-1.5.jar"


def meteor_jar() -> Path | None:
    """Path of pycocoevalcap's METEOR jar, or None when the package is not installed."""
    root = pycocoevalcap_dir()
    jar = root / "meteor" / JAR_NAME if root else None
    return jar if jar is not None and jar.is_file() else None


def meteor_unavailable() -> str | None:
    """None when METEOR can run here, otherwise the reason (with what to install)."""
    if meteor_jar() is None:
        return f"METEOR needs {JAR_NAME} from the pycocoevalcap package: {PIP_HINT}"
    return java_problem()


def _clean(text: str) -> str:
    """Remove what would break the line protocol (field separators, newlines, double spaces)."""
    return " ".join(text.replace("|||", "").split())


def meteor(
    hypotheses: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    timeout: float = 600.0,
) -> tuple[float, dict[Hashable, float]]:
    """Corpus METEOR and per-item scores for tokenized ``{id: hyp}`` / ``{id: [ref, ...]}``.

    Raises RuntimeError (with the reason) when Java or the jar is missing or the jar fails.
    """
    problem = meteor_unavailable()
    if problem:
        raise RuntimeError(problem)
    keys = list(hypotheses)
    if not keys:
        return 0.0, {}
    jar = meteor_jar()
    command = [shutil.which("java"), "-jar", "-Xmx2G", jar.name, "-", "-", "-stdio", "-l", "en", "-norm"]
    process = subprocess.Popen(
        command, cwd=jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stats = []
        for key in keys:
            fields = ["SCORE", *(_clean(ref) for ref in references[key]), _clean(hypotheses[key])]
            stats.append(_exchange(process, " ||| ".join(fields), 1)[0])
        lines = _exchange(process, " ||| ".join(["EVAL", *stats]), len(keys) + 1)
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    per_item = {key: float(line) for key, line in zip(keys, lines)}
    return float(lines[-1]), per_item


def _exchange(process: subprocess.Popen, line: str, replies: int) -> list[str]:
    """Send one protocol line and read ``replies`` answer lines."""
    try:
        process.stdin.write(line + "\n")
        process.stdin.flush()
        answers = [process.stdout.readline().strip() for _ in range(replies)]
    except BrokenPipeError:
        answers = []
    if len(answers) < replies or not all(answers):
        process.kill()
        error = process.stderr.read()[-2000:]
        raise RuntimeError(f"the METEOR jar stopped answering; its error output was:\n{error}")
    return answers
