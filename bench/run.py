"""Run every benchmark section and write bench/results.json (each figure beside its reference)."""

from __future__ import annotations

import importlib
import json
import logging
import platform
import sys
import time
from pathlib import Path

import torch

SECTIONS = ("bench_core", "bench_packaged", "bench_serve", "bench_dual", "bench_train", "bench_voice", "bench_data",
            "bench_api", "bench_llamacpp", "bench_dtype", "bench_native")
DEFAULT_SECTIONS = SECTIONS[:-1]  # bench_native trains four quickstarts (about an hour): by name only
HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.path.insert(0, str(HERE))
    only = set(argv) or set(DEFAULT_SECTIONS)
    out = HERE / "results.json"
    results = json.loads(out.read_text()) if out.is_file() else {}  # sections not run now keep their figures
    results.update({
        "machine": {"platform": platform.platform(), "cpus": torch.get_num_threads(), "torch": torch.__version__},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    for name in SECTIONS:
        if name not in only:
            continue
        logging.info("== %s", name)
        start = time.perf_counter()
        fresh = importlib.import_module(name).run()  # a section may run a subset of its parts (env): merge
        results[name] = {**results.get(name, {}), **fresh, "seconds": round(time.perf_counter() - start, 1)}
    out.write_text(json.dumps(results, indent=2))
    logging.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
