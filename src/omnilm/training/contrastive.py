"""The contrastive objective: a CLIP-style dual encoder on image–caption pairs (LiT or full training).

Loss: symmetric InfoNCE over each micro-batch, whose other pairs are the negatives; pairs with the same
caption count as matches, not negatives (`positives`). A locked image tower is run once per image (pooled
features stored by omnilm.data.feature_cache, reused across epochs and runs) and a locked text tower
once per distinct caption, so the steps train only what the stage unlocks — minutes instead of hours on
a CPU. Parts: `stage.vision`, `stage.text` (the towers) and `stage.connectors` (heads + temperature).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from omnilm.data.feature_cache import FeatureStore, default_root, item_key, weights_digest
from omnilm.dual.api import DualEncoder
from omnilm.dual.captions import CaptionRecord, load_captions
from omnilm.dual.config import DualEncoderConfig
from omnilm.dual.evaluate import retrieval_metrics
from omnilm.errors import MediaError
from omnilm.training.config import TrainConfig
from omnilm.training.data import TrainData
from omnilm.training.stages import param_groups, set_train_mode

logger = logging.getLogger(__name__)

_PARTS = {"vision_tower": "vision", "text_tower": "text"}  # parameter prefix → stage key; the rest: connectors


class ContrastiveObjective:
    find_unused_parameters = False

    def __init__(self, cfg: TrainConfig, *, world: int, rank: int) -> None:
        self.cfg = cfg
        self.kwargs = {"micro_batch": cfg.optim.batch_size, "grad_accum": cfg.optim.grad_accum, "world": world,
                       "rank": rank, "seed": cfg.seed}
        self.records = [r for spec in cfg.data.train_files for r in load_captions(spec)]
        evals = [r for spec in cfg.data.eval_files for r in load_captions(spec, require_both=False)]
        self.eval_records = evals[: cfg.data.max_eval_samples]
        self.eval_features = None

    def build(self, device: torch.device) -> DualEncoder:
        cfg, section = self.cfg, self.cfg.model
        if section.checkpoint:
            from omnilm.sources import resolve_source

            self.dual = DualEncoder.from_pretrained(resolve_source(section.checkpoint))
        else:
            self.dual = DualEncoder.from_config(DualEncoderConfig.from_dict(section.config_mapping()), seed=cfg.seed)
        model = self.dual.model.to(device)
        model.requires_grad_(False)
        for part, modules in (("vision", [model.vision_tower]), ("text", [model.text_tower]),
                              ("connectors", [model.vision_proj, model.text_proj, model.logit_scale])):
            if getattr(cfg.stage, part).mode == "full":
                for module in modules:
                    module.requires_grad_(True)
                if part != "connectors" and part not in model.config.trained_parts:
                    model.config.trained_parts.append(part)
        image_features = None
        if cfg.stage.vision.mode == "frozen" and cfg.feature_cache.enabled:
            image_features, self.records = self._image_features(self.records, "image features (train)")
            if self.eval_records:
                self.eval_features, self.eval_records = self._image_features(self.eval_records, "image features (eval)")
        captions = sorted({r.caption for r in self.records})
        caption_id = {c: i for i, c in enumerate(captions)}
        caption_features = self._text_features(captions) if cfg.stage.text.mode == "frozen" else None  # (T, C_t)
        rows = [{"index": i, "caption": caption_id[r.caption]} for i, r in enumerate(self.records)]
        self.train_data = TrainData(rows, cfg.data, **self.kwargs)
        self.train_data.attach(PairCollator(self.dual.processor, self.records, captions, image_features,
                                            caption_features))
        self.train_mode()
        return self.dual

    def param_groups(self) -> list[dict[str, Any]]:
        return param_groups(self.dual.model, self.cfg.stage, self.cfg.optim,
                            part=lambda name: _PARTS.get(name.split(".", 1)[0], "connectors"))

    def prepare(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        return {k: v.to(device) for k, v in batch.items()}

    def items(self, batch: dict[str, Any]) -> int:
        return 1  # the loss is a mean over the micro-batch's pairs: micro-batches are averaged

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return model(**batch).loss

    def has_eval(self) -> bool:
        return bool(self.eval_records)

    @torch.no_grad()
    def eval_metrics(self, model: torch.nn.Module, reduce) -> dict[str, float]:
        """Recall@1/@5 both ways and zero-shot accuracy on the eval records (every process computes them)."""
        self.dual.model.eval()
        self.dual.forget_identity()
        embeds = None
        if self.eval_features is not None:
            embeds = self.dual.model.embed_image_features(self.eval_features.to(self.dual.device)).cpu().numpy()
        return retrieval_metrics(self.dual, self.eval_records, image_embeds=embeds)

    def train_mode(self) -> None:
        """Train mode, but eval mode (no dropout) for a locked tower."""
        set_train_mode(self.dual.model, [self.dual.model.vision_tower, self.dual.model.text_tower])

    def export(self, directory: Path) -> None:
        self.dual.forget_identity()
        self.dual.save(directory, full=self.cfg.export.full)

    # Locked towers, run once --------------------------------------------------------------------------
    @torch.inference_mode()
    def _image_features(self, records: list[CaptionRecord], desc: str,
                        batch_size: int = 32) -> tuple[torch.Tensor, list[CaptionRecord]]:
        """Pooled features (N, C_v) of each readable record's image, from the feature cache or computed into it;
        unreadable images are skipped with a warning naming them."""
        dual = self.dual
        store = FeatureStore(self.cfg.feature_cache.dir or default_root())
        processor = dual.processor
        identity = hashlib.sha256(json.dumps({
            "dual_vision": dual.config.vision.__dict__, "weights": weights_digest(dual.model.vision_tower),
            "pixels": [processor.image_size, list(processor.mean), list(processor.std)],
        }, sort_keys=True).encode()).hexdigest()[:24]
        memo: dict = {}
        keys = [item_key(r.image, memo) for r in records]
        features = [store.get(identity, key) if key else None for key in keys]
        missing = [i for i, f in enumerate(features) if f is None]
        for start in tqdm(range(0, len(missing), batch_size), desc=desc, unit="batch", disable=not missing):
            pixels, good = [], []
            for i in missing[start : start + batch_size]:
                try:
                    pixels.append(processor.image(records[i].image))
                    good.append(i)
                except MediaError as err:
                    logger.warning("skipping unreadable image %s: %s", records[i].image, err)
            if pixels:
                computed = dual.model.image_features(torch.stack(pixels).to(dual.device)).cpu()  # (b, C_v)
                for i, row in zip(good, computed):
                    features[i] = row.clone()
                    if keys[i]:
                        store.put(identity, keys[i], features[i])
        kept = [i for i, f in enumerate(features) if f is not None]
        stacked = torch.stack([features[i] for i in kept]) if kept else torch.zeros(0, dual.model.vision_dim)
        return stacked, [records[i] for i in kept]

    @torch.inference_mode()
    def _text_features(self, texts: list[str]) -> torch.Tensor:
        dual = self.dual
        chunks = [dual.model.text_features(**{k: v.to(dual.device) for k, v in dual.processor.texts(texts[i : i + 256]).items()})
                  for i in range(0, len(texts), 256)]
        return torch.cat(chunks).cpu()  # (T, C_t)


class PairCollator:
    """Rows {index, caption id} → one contrastive batch: images (cached features or pixels), texts (cached
    features, or each distinct caption tokenised once with `text_index`) and the `positives` matrix."""

    def __init__(self, processor, records: list[CaptionRecord], captions: list[str],
                 image_features: torch.Tensor | None, caption_features: torch.Tensor | None) -> None:
        self.processor, self.records, self.captions = processor, records, captions
        self.image_features, self.caption_features = image_features, caption_features

    def __call__(self, rows: list[dict[str, int]]) -> dict[str, torch.Tensor]:
        index = torch.tensor([row["index"] for row in rows])  # (B,)
        ids = torch.tensor([row["caption"] for row in rows])  # (B,)
        batch = {"positives": ids[:, None] == ids[None, :]}  # (B, B) same caption ⇒ also a match
        if self.image_features is not None:
            batch["image_features"] = self.image_features[index]  # (B, C_v)
        else:
            batch["pixel_values"] = self.processor.images([self.records[i].image for i in index.tolist()])
        if self.caption_features is not None:
            batch["text_features"] = self.caption_features[ids]  # (B, C_t)
        else:
            unique, inverse = ids.unique(return_inverse=True)  # each distinct caption through the tower once
            batch.update(self.processor.texts([self.captions[i] for i in unique.tolist()]), text_index=inverse)
        return batch
