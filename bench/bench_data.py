"""Data at scale: a 1,000,000-record LLaVA JSON array from `omnilm train` to the first step, memory over
1,000 steps, and the loader's throughput against the training step's consumption.

1. Start-up and memory. A LLaVA-format JSON array (one JSON array of {id, image, conversations}, as
   `llava_v1_5_mix665k.json`) of 1M records, and one of 100k as the reference, is generated in a temporary
   folder. `omnilm train configs/tiny-image.yaml` runs on each as a subprocess (the tiny random model: the
   data path is what is measured; batch 4, feature cache off): 1,000 steps on the 1M file, 100 on the
   reference. The bench polls the run's metrics.jsonl and the process's resident memory
   (/proc/PID/status VmRSS): seconds from the command to its first step (cold: the offset index is
   built; warm: read from the cache), and RSS at steps 1, 100 and 1,000. Flat memory means RSS at 1,000
   ≈ RSS at 1 on the 1M run, and the 1M run ≈ the 100k run at step 100. Reference, same run: reading the
   whole 1M file into Python objects as LLaVA's loader does (`json.load`), its seconds and added RSS.
2. Loader vs step. Records whose images are 336×336 JPEGs (LLaVA-1.5's input size; decoded, resized and
   collated by the loader) are fetched by the trainer's own loader alone (records/s), and consumed by the
   optimizer step alone on batches fetched before (records/s); then a training loop with
   `data.num_workers` workers measures the share of wall time a step waits for data. On the tiny model the
   step is far cheaper than a real one, so this is the hardest case for the loader.

Environment knobs: OMNILM_BENCH_DATA_RECORDS (default 1000000), OMNILM_BENCH_DATA_STEPS (1000),
OMNILM_BENCH_DATA_WORKERS (1).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
BATCH = 4
QUESTIONS = ["What is the colour of the shape?", "Describe the image briefly.", "What shape is this?"]


def write_llava_json(path: Path, count: int, images: list[str]) -> Path:
    """A LLaVA JSON array of `count` records over `images` (written in chunks: memory stays small)."""
    with path.open("w", encoding="utf-8") as out:
        out.write("[")
        for start in range(0, count, 10_000):
            chunk = []
            for i in range(start, min(count, start + 10_000)):
                record = {"id": f"{i:09d}", "image": images[i % len(images)], "conversations": [
                    {"from": "human", "value": f"<image>\n{QUESTIONS[i % 3]}"},
                    {"from": "gpt", "value": ["red", "a red circle on white", "circle"][i % 3]}]}
                chunk.append(json.dumps(record))
            out.write(("," if start else "") + ",".join(chunk))
        out.write("]")
    return path


def write_images(folder: Path, count: int, size: int, fmt: str) -> list[str]:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(count):
        pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        name = f"{i:04d}.{fmt}"
        Image.fromarray(pixels).save(folder / name, quality=90) if fmt == "jpg" else Image.fromarray(pixels).save(
            folder / name)
        names.append(f"images/{name}")
    return names


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def train_run(data: Path, out: Path, cache: Path, steps: int, marks: tuple[int, ...]) -> dict:
    """`omnilm train` on `data` as a subprocess: seconds to the first step, RSS (MB) at each step in `marks`."""
    command = [sys.executable, "-m", "omnilm.cli.main", "train", str(ROOT / "configs" / "tiny-image.yaml")]
    for setting in (f"data.train={data}", "data.eval=null", f"output_dir={out}", "resume=never", "save_every=null",
                    f"optim.max_steps={steps}", f"optim.batch_size={BATCH}", "feature_cache.enabled=false", "log_every=1",
                    "eval_every=null"):
        command += ["--set", setting]
    env = {**os.environ, "OMNILM_CACHE": str(cache), "PYTHONPATH": str(ROOT / "src")}
    out.mkdir(parents=True, exist_ok=True)
    log = (out.parent / f"{out.name}.log").open("w")  # a file, not a pipe: a full pipe would stall the run
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    metrics, first, rss, peak = out / "metrics.jsonl", None, {}, 0.0
    while process.poll() is None:
        current = _rss_mb(process.pid) or 0.0
        peak = max(peak, current)
        done = _last_step(metrics)
        if done >= 1 and first is None:
            first = time.perf_counter() - started
        for mark in marks:
            if done >= mark and mark not in rss:
                rss[mark] = round(current, 1)
        time.sleep(0.05)
    log.close()
    if process.returncode != 0:
        raise RuntimeError(f"omnilm train failed: {(out.parent / f'{out.name}.log').read_text()[-2000:]}")
    return {"seconds_to_first_step": round(first, 2), "rss_mb_at_step": rss, "peak_rss_mb": round(peak, 1),
            "total_seconds": round(time.perf_counter() - started, 1)}


def _last_step(metrics: Path) -> int:
    try:
        with metrics.open("rb") as handle:
            handle.seek(max(0, metrics.stat().st_size - 400))
            lines = handle.read().decode(errors="ignore").strip().splitlines()
        return int(json.loads(lines[-1])["step"]) if lines else 0
    except (OSError, ValueError, KeyError):
        return 0


def json_load_reference(data: Path) -> dict:
    """What a loader that reads the whole file does (LLaVA's `json.load(open(path))`): seconds and RSS."""
    code = ("import json, time, sys\nfrom pathlib import Path\n"
            "def rss():\n    return int([l for l in Path('/proc/self/status').read_text().splitlines()"
            " if l.startswith('VmRSS:')][0].split()[1]) / 1024\n"
            "before = rss(); started = time.perf_counter()\nrecords = json.load(open(sys.argv[1]))\n"
            "print(json.dumps({'seconds': round(time.perf_counter() - started, 2),"
            " 'rss_mb_added': round(rss() - before, 1), 'records': len(records)}))")
    done = subprocess.run([sys.executable, "-c", code, str(data)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def loader_vs_step(tmp: Path, workers: int, steps: int = 40) -> dict:
    """Records/s the loader delivers vs records/s the step consumes; the share of time steps wait for data."""
    from omnilm.training import TrainConfig
    from omnilm.training.trainer import Trainer

    images = write_images(tmp / "jpg" / "images", 64, 336, "jpg")
    data = write_llava_json(tmp / "jpg" / "llava.json", 8 * steps * 4, images)
    cfg = TrainConfig.from_file(ROOT / "configs" / "tiny-image.yaml", [
        f"data.train={data}", "data.eval=null", f"output_dir={tmp / 'loader-run'}", "resume=never",
        "optim.batch_size=8", "optim.max_steps=100000", "feature_cache.enabled=false",
        f"data.num_workers={workers}"])
    trainer = Trainer(cfg)
    stream = trainer.train_data.steps(0)
    next(stream)  # workers started, first batch: one-time costs
    started = time.perf_counter()
    batches = [next(stream) for _ in range(steps)]
    loader_rate = 8 * steps / (time.perf_counter() - started)
    trainer._optimizer_step(batches[0])
    started = time.perf_counter()
    for micro in batches:
        trainer._optimizer_step(micro)
    step_rate = 8 * steps / (time.perf_counter() - started)
    waited, total = 0.0, time.perf_counter()
    for _ in range(steps):
        before = time.perf_counter()
        micro = next(stream)
        waited += time.perf_counter() - before
        trainer._optimizer_step(micro)
    total = time.perf_counter() - total
    return {"image": "336x336 JPEG, resized by the tiny model's processor", "num_workers": workers,
            "loader_records_per_s": round(loader_rate, 1), "step_consumes_records_per_s": round(step_rate, 1),
            "loader_vs_step": round(loader_rate / step_rate, 2),
            "training_loop_share_waiting_for_data": round(waited / total, 3)}


def run() -> dict:
    count = int(os.environ.get("OMNILM_BENCH_DATA_RECORDS", "1000000"))
    steps = int(os.environ.get("OMNILM_BENCH_DATA_STEPS", "1000"))
    workers = int(os.environ.get("OMNILM_BENCH_DATA_WORKERS", "1"))
    marks = tuple(m for m in (1, 100, steps) if m <= steps)
    result: dict = {"model": "omnilm.testing tiny image model (random, a few MB): the data path is measured",
                    "batch_size": BATCH, "steps": steps}
    with tempfile.TemporaryDirectory(prefix="omnilm-bench-data-") as tmp:
        tmp = Path(tmp)
        images = write_images(tmp / "images", 64, 32, "png")
        short = min(100, steps)
        for label, size in (("records_1m", count), ("records_100k_reference", max(1000, count // 10))):
            started = time.perf_counter()
            data = write_llava_json(tmp / f"llava-{size}.json", size, images)
            generated = time.perf_counter() - started
            cache = tmp / f"cache-{size}"
            run_steps = steps if label == "records_1m" else short  # the reference: compared at step `short`
            cold = train_run(data, tmp / f"run-{size}", cache, run_steps, marks if run_steps == steps else (1, short))
            entry = {"records": size, "file_mb": round(data.stat().st_size / 2**20, 1),
                     "generate_seconds": round(generated, 1), "cold_index": cold}
            if label == "records_1m":
                entry["warm_index"] = train_run(data, tmp / f"run-{size}-warm", cache, 2, (1,))
                entry["reference_json_load_whole_file"] = json_load_reference(data)
            result[label] = entry
            logger.info("%s: %s", label, entry)
        result["rss_growth_mb_step1_to_last"] = round(
            result["records_1m"]["cold_index"]["rss_mb_at_step"][steps]
            - result["records_1m"]["cold_index"]["rss_mb_at_step"][1], 1)
        result[f"rss_mb_1m_minus_reference_at_step_{short}"] = round(
            result["records_1m"]["cold_index"]["rss_mb_at_step"][short]
            - result["records_100k_reference"]["cold_index"]["rss_mb_at_step"][short], 1)
        result["loader_vs_step"] = loader_vs_step(tmp, workers)
    logger.info("data at scale: %s", json.dumps(result))
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(json.dumps(run(), indent=2))
