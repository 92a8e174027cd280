"""Contrastive training of a dual encoder (one process): stage settings, seeded order, resumable checkpoints.

A locked (frozen) image tower is run once over the data and its pooled features cached on disk, so the
steps train only what the stage unlocks (projection heads, temperature, optionally the text tower) —
the LiT recipe, and the difference between hours and minutes on a CPU.

Layout: OUTPUT/checkpoint/{model/, trainer_state.pt} (written atomically every `save_every` steps and
on interrupt; a rerun resumes), OUTPUT/final/ (the trained model), OUTPUT/metrics.json.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from omnilm.dual.api import DualModel, load_dual
from omnilm.dual.captions import CaptionRecord, load_captions
from omnilm.dual.config import DualTrainConfig
from omnilm.dual.evaluate import evaluate
from omnilm.errors import MediaError
from omnilm.io import atomic_directory, atomic_write_bytes
from omnilm.paths import cache_dir

logger = logging.getLogger(__name__)


@dataclass
class DualTrainResult:
    output_dir: str
    step: int
    total_steps: int
    final_dir: str | None  # None when stopped before the end (interrupt)
    loss: float | None
    metrics: dict[str, float] | None
    seconds: dict[str, float]  # wall time of feature extraction, training, evaluation


def train_dual(cfg: DualTrainConfig) -> DualTrainResult:
    """Run (or resume) the training `cfg` describes; returns where the model is and what it scored."""
    previous = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        return _train(cfg)
    finally:
        torch.set_num_threads(previous)


def _train(cfg: DualTrainConfig) -> DualTrainResult:
    run_started = time.perf_counter()  # max_minutes counts from here: image features included
    torch.manual_seed(cfg.seed)
    out = Path(cfg.output_dir)
    resume = out / "checkpoint"
    if (resume / "trainer_state.pt").is_file():
        dual = load_dual(resume / "model")
        logger.info("resuming from %s", resume)
    elif cfg.checkpoint:
        dual = load_dual(cfg.checkpoint)
    else:
        dual = DualModel.from_config(cfg.model, seed=cfg.seed)
    model = dual.model
    groups = apply_stage(model, cfg)
    seconds: dict[str, float] = {}

    started = time.perf_counter()
    records = load_captions(cfg.train)
    vision_frozen = cfg.stage.vision.mode == "frozen"
    features = None
    if vision_frozen and cfg.feature_cache:
        features, records = image_features(dual, records, desc="image features (train)",
                                           cache_dir=cfg.feature_cache_dir)
    text_frozen = cfg.stage.text.mode == "frozen"
    captions = sorted({r.caption for r in records})
    caption_id = {c: i for i, c in enumerate(captions)}
    caption_features = _text_features(dual, captions) if text_frozen else None  # (T, C_t)
    targets = torch.tensor([caption_id[r.caption] for r in records])  # (N,)
    seconds["features"] = time.perf_counter() - started

    n = len(records)
    batch = min(cfg.batch_size, n)
    steps_per_epoch = max(1, n // batch)  # the last partial batch is dropped: fewer negatives would skew the loss
    total = cfg.max_steps or max(1, round(cfg.epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(groups)
    warmup = int(cfg.warmup_ratio * total)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, warmup, total))
    step = 0
    if (resume / "trainer_state.pt").is_file():
        state = torch.load(resume / "trainer_state.pt", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        step = state["step"]

    started, loss_value, stopped = time.perf_counter(), None, False
    model.train()
    bar = tqdm(total=total, initial=step, desc="train dual encoder", unit="step")
    try:
        while step < total:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + step // steps_per_epoch))
            position = (step % steps_per_epoch) * batch
            index = order[position : position + batch]  # (B,)
            ids = targets[index]
            kwargs = {"positives": ids[:, None] == ids[None, :]}  # (B, B) same caption ⇒ also a match
            if features is not None:
                kwargs["image_features"] = features[index]
            else:
                kwargs["pixel_values"] = dual.processor.images([records[i].image for i in index.tolist()])
            unique, inverse = ids.unique(return_inverse=True)  # each distinct caption through the tower once
            if caption_features is not None:
                kwargs["text_features"] = caption_features[ids]
            else:
                tokens = dual.processor.texts([captions[i] for i in unique.tolist()])
                kwargs["text_features"] = model.text_features(**tokens)[inverse]  # (U, C_t) → (B, C_t)
            loss = model(**kwargs).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            loss_value = loss.item()
            bar.update(1)
            if step % cfg.log_every == 0 or step == total:
                bar.set_postfix(loss=f"{loss_value:.3f}", scale=f"{model.logit_scale_value.item():.1f}")
                logger.debug("step %d loss %.4f", step, loss_value)
            if step % cfg.save_every == 0 and step < total:
                save_training_checkpoint(dual, optimizer, schedule, step, resume)
            if cfg.max_minutes and time.perf_counter() - run_started > 60 * cfg.max_minutes:
                logger.warning("stopping at step %d of %d: max_minutes=%s reached", step, total, cfg.max_minutes)
                break
    except KeyboardInterrupt:
        stopped = True
        save_training_checkpoint(dual, optimizer, schedule, step, resume)
        logger.warning("interrupted at step %d; run the same command again to resume", step)
    finally:
        bar.close()
    seconds["train"] = time.perf_counter() - started
    model.eval()
    dual.forget_identity()
    if stopped:
        return DualTrainResult(str(out), step, total, None, loss_value, None, seconds)
    final = dual.save(out / "final")

    metrics = None
    if cfg.eval:
        started = time.perf_counter()
        eval_records = load_captions(cfg.eval, require_both=False)
        embeds = None
        if vision_frozen and cfg.feature_cache:
            eval_features, eval_records = image_features(dual, eval_records, desc="image features (eval)",
                                                         cache_dir=cfg.feature_cache_dir)
            with torch.inference_mode():
                embeds = model.embed_image_features(eval_features).numpy()
        metrics = evaluate(dual, eval_records, image_embeds=embeds)
        seconds["eval"] = time.perf_counter() - started
    summary = {"step": step, "loss": loss_value, "metrics": metrics, "seconds": seconds}
    atomic_write_bytes(out / "metrics.json", json.dumps(summary, indent=2).encode())
    return DualTrainResult(str(out), step, total, str(final), loss_value, metrics, seconds)


def apply_stage(model, cfg: DualTrainConfig) -> list[dict]:
    """Freeze / unfreeze each part from `cfg.stage`; AdamW groups (no decay on biases, norms, temperature)."""
    model.requires_grad_(False)
    parts = {"vision": [model.vision_tower], "text": [model.text_tower], "heads": [model.vision_proj, model.text_proj]}
    groups = []
    for name, modules in parts.items():
        stage = getattr(cfg.stage, name)
        if stage.mode != "full":
            continue
        params = [(n, p) for m in modules for n, p in m.named_parameters()]
        if name == "heads":
            model.logit_scale.requires_grad_(True)
            params.append(("logit_scale", model.logit_scale))
        for _, p in params:
            p.requires_grad_(True)
        lr = stage.lr if stage.lr is not None else cfg.lr
        decay = stage.weight_decay or cfg.weight_decay
        groups.append({"params": [p for _, p in params if p.ndim >= 2], "lr": lr, "weight_decay": decay})
        groups.append({"params": [p for _, p in params if p.ndim < 2], "lr": lr, "weight_decay": 0.0})
        if name in ("vision", "text") and name not in model.config.trained_parts:
            model.config.trained_parts.append(name)
    return [g for g in groups if g["params"]]


def save_training_checkpoint(dual: DualModel, optimizer, schedule, step: int, directory: Path) -> None:
    """Model + optimizer + scheduler + step, swapped in atomically: a kill leaves the previous one."""
    with atomic_directory(directory) as staging:
        dual.save(staging / "model")
        state = {"optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict(), "step": step}
        torch.save(state, staging / "trainer_state.pt")
    logger.info("checkpoint at step %d: %s", step, directory)


def image_features(dual: DualModel, records: list[CaptionRecord], *, desc: str, batch_size: int = 32,
                   cache_dir: str | None = None) -> tuple[torch.Tensor, list[CaptionRecord]]:
    """Pooled frozen-tower features (N, C_v) of each readable record's image, cached on disk per tower and
    image set; unreadable images are skipped with a warning naming them."""
    key = hashlib.sha256(json.dumps([dual.config.vision.__dict__, dual.processor.image_size,
                                     [(r.image, _stat(r.image)) for r in records]]).encode())
    for name, tensor in sorted(dual.model.vision_tower.state_dict().items()):  # the tower's weights, too
        key.update(name.encode() + tensor.detach().float().contiguous().numpy().tobytes())
    cache = Path(cache_dir or _cache_root()) / f"{key.hexdigest()[:24]}.safetensors"
    if cache.is_file():
        stored = load_file(str(cache))
        kept = stored["kept"].tolist()
        return stored["features"], [records[i] for i in kept]
    chunks, kept = [], []
    bar = tqdm(total=len(records), desc=desc, unit="img")
    with torch.inference_mode():
        for start in range(0, len(records), batch_size):
            pixels, good = [], []
            for i in range(start, min(start + batch_size, len(records))):
                try:
                    pixels.append(dual.processor.image(records[i].image))
                    good.append(i)
                except MediaError as err:
                    logger.warning("skipping unreadable image %s: %s", records[i].image, err)
            if pixels:
                chunks.append(dual.model.image_features(torch.stack(pixels)))
                kept += good
            bar.update(min(batch_size, len(records) - start))
    bar.close()
    features = torch.cat(chunks) if chunks else torch.zeros(0, dual.model.vision_dim)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp-{os.getpid()}")
    save_file({"features": features.contiguous(), "kept": torch.tensor(kept)}, str(tmp))
    os.replace(tmp, cache)
    return features, [records[i] for i in kept]


@torch.inference_mode()
def _text_features(dual: DualModel, texts: list[str]) -> torch.Tensor:
    return torch.cat([dual.model.text_features(**dual.processor.texts(texts[i : i + 256]))
                      for i in range(0, len(texts), 256)])


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _stat(path: str) -> list[int]:
    try:
        info = os.stat(path)
        return [info.st_size, info.st_mtime_ns]
    except OSError:
        return [-1, -1]


def _cache_root() -> Path:
    return cache_dir("dual-features")
