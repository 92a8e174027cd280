"""Image–text retrieval tasks for dual encoders (Flickr30k, COCO): Recall@1/5/10 both ways.

Each record holds one image and its captions (``references_field``, e.g. Flickr30k's five); every caption
is a text query whose image must rank high, and every image a query whose captions must.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from omnilm.data.records import Record
from omnilm.errors import OmniError
from omnilm.evaluation.scoring import references
from omnilm.evaluation.tasks import Task
from omnilm.metrics import recall_at_k

logger = logging.getLogger(__name__)


def evaluate_retrieval(model: Any, task: Task, records: list[Record], out_dir: Path) -> dict:
    """Recall@K of a dual encoder (``embed_images`` / ``embed_texts``) on the task's image–caption records."""
    if not (hasattr(model, "embed_images") and hasattr(model, "embed_texts")):
        raise OmniError(f"task {task.name} ranks images and captions by embedding: give a dual encoder "
                        f"(a model with embed_images/embed_texts), not {getattr(model, 'name', type(model).__name__)}")
    images = []
    for record in records:
        found = [p["image"] for m in record.messages for p in m["content"] if p["type"] == "image"]
        if len(found) != 1:
            raise OmniError(f"task {task.name}: record {record.id!r} needs exactly one image, has {len(found)}")
        images.append(found[0])
    captions, owner = [], []
    for index, record in enumerate(records):
        texts = references(task, record)
        captions += texts
        owner += [index] * len(texts)
    image_embeds = np.asarray(model.embed_images(images), dtype=np.float64)  # (N_images, D)
    text_embeds = np.asarray(model.embed_texts(captions), dtype=np.float64)  # (N_texts, D)
    metrics = recall_at_k(image_embeds @ text_embeds.T, ks=(1, 5, 10), text_to_image=owner)
    results = {"task": task.name, "description": task.description, "num_items": len(records),
               "num_captions": len(captions), "metrics": metrics, "by_category": {}, "unavailable": {},
               "model": getattr(model, "name", type(model).__name__)}
    out_dir.mkdir(parents=True, exist_ok=True)
    results["files"] = {"results": str(out_dir / "results.json"), "report": str(out_dir / "report.md")}
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# {task.name} — {results['model']}", "", f"{len(records)} images, {len(captions)} captions", "",
             "| metric | value |", "| --- | --- |", *(f"| {k} | {v:.4f} |" for k, v in metrics.items()), ""]
    (out_dir / "report.md").write_text("\n".join(lines))
    return results
