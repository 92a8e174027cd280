"""Stage-1 training throughput: omnilm's trainer with and without the feature cache vs a plain PyTorch loop.

Same parts, same data, same process. One omnilm `Trainer` is built from `configs/stage1-align.yaml`
(DINOv2-S + Qwen2.5-0.5B from `pkg:` references; only the connector trains). Each of its steps is
what `omnilm train` runs per optimizer step: fetch + collate the micro-batch (chat template, image
decode and resize, labels), the feature cache when on, forward, backward, clip, AdamW, schedule. The
reference is the shortest PyTorch loop doing the same work on the same model: `processor(...)`,
`model(**batch).loss.backward()`, `optimizer.step()`. The feature cache is filled by one cold pass
over the records first; then the three variants run interleaved, a step each in turn, so load from
other processes on the machine hits them alike.

Environment knobs: OMNILM_BENCH_TRAIN_CONFIG (another training YAML), OMNILM_BENCH_TRAIN_TINY=1 (tiny
random parts: a smoke run), OMNILM_BENCH_TRAIN_STEPS (timed steps per variant, default 4),
OMNILM_BENCH_TRAIN_BATCH (default 4).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]


def _settings() -> tuple[Path, list[str], int, int]:
    config = Path(os.environ.get("OMNILM_BENCH_TRAIN_CONFIG", ROOT / "configs" / "stage1-align.yaml"))
    overrides = ["model.config=null", "model.tiny=[image]"] if os.environ.get("OMNILM_BENCH_TRAIN_TINY") == "1" else []
    return config, overrides, int(os.environ.get("OMNILM_BENCH_TRAIN_STEPS", "4")), \
        int(os.environ.get("OMNILM_BENCH_TRAIN_BATCH", "4"))


def _timed(step) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def run() -> dict:
    from omnilm.data.feature_cache import FeatureCache
    from omnilm.data.records import read_records
    from omnilm.data.toy import build_shapes
    from omnilm.training import TrainConfig
    from omnilm.training.trainer import Trainer

    config, overrides, steps, batch = _settings()
    with tempfile.TemporaryDirectory(prefix="omnilm-bench-train-") as tmp:
        tmp = Path(tmp)
        records = batch * (steps + 1)
        data = Path(build_shapes(tmp / "data", train=records, test=1, size=64)["dir"]) / "train.jsonl"
        cfg = TrainConfig.from_file(config, [
            *overrides, f"data.train={data}", "data.eval=null", f"output_dir={tmp / 'run'}", "resume=never",
            f"optim.batch_size={batch}", "optim.grad_accum=1", "optim.warmup_steps=0", "optim.max_steps=1000",
            "feature_cache.enabled=false",
        ])
        trainer = Trainer(cfg)
        objective = trainer.objective
        model, processor = trainer.wrapper.model, trainer.wrapper.processor
        cache = FeatureCache(tmp / "features", model, processor)

        def trainer_steps():
            epoch = 0
            while True:
                yield from trainer.train_data.steps(epoch)
                epoch += 1

        stream = trainer_steps()

        def omnilm_step(with_cache: bool):
            objective.cache = cache if with_cache else None
            trainer._optimizer_step(next(stream))

        conversations = [r.messages for r in read_records(data)]
        plain_optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        position = iter(range(10**9))

        def plain_step():
            start = next(position) * batch % records
            inputs = processor(conversations[start : start + batch], return_labels=True, padding_side="right")
            model(**inputs).loss.backward()
            plain_optimizer.step()
            plain_optimizer.zero_grad(set_to_none=True)

        warmup = _timed(plain_step)  # first calls pay one-time costs
        cold = [_timed(lambda: omnilm_step(True)) for _ in range(steps + 1)]  # epoch 0 fills the cache
        warmup, cold = [warmup, cold[0]], cold[1:]
        times: dict[str, list[float]] = {"plain": [], "no_cache": [], "cache_warm": []}
        for _ in range(steps):
            times["plain"].append(_timed(plain_step))
            times["no_cache"].append(_timed(lambda: omnilm_step(False)))
            times["cache_warm"].append(_timed(lambda: omnilm_step(True)))

    def rate(seconds: list[float]) -> float:
        return round(batch * len(seconds) / sum(seconds), 3)

    plain = rate(times["plain"])
    result = {
        "parts": "tiny random parts (smoke run)" if overrides else f"model section of {config.name}",
        "batch_size": batch,
        "timed_steps": steps,
        "plain_pytorch_samples_per_s": plain,
        "omnilm_no_cache_samples_per_s": rate(times["no_cache"]),
        "omnilm_cache_cold_samples_per_s": rate(cold),
        "omnilm_cache_warm_samples_per_s": rate(times["cache_warm"]),
        "no_cache_vs_plain": round(rate(times["no_cache"]) / plain, 3),
        "cache_warm_vs_plain": round(rate(times["cache_warm"]) / plain, 3),
        "step_seconds_median": {k: round(statistics.median(v), 3) for k, v in times.items()},
        "warmup_seconds": [round(w, 2) for w in warmup],
        "cache": {"hits": cache.hits, "misses": cache.misses},
    }
    logger.info("stage-1 training samples/s: %s", result)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(json.dumps(run(), indent=2))
