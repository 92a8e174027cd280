"""Run a task on a model: batched generation, predictions saved as they come, resumable, then scored.

Files in ``out_dir``: ``run.json`` (what was run: task, model, prompt, generation settings),
``predictions.jsonl`` (one ``{"id", "raw", "prediction"}`` line per item, appended after each batch, so an
interrupted run resumes where it stopped), then ``results.json``, ``report.md`` and, for classification
tasks, ``confusion_matrix.png``. Batches are fixed by item position, so a resumed run computes exactly the
batches an uninterrupted one would have.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from omnilm.config import MODALITIES
from omnilm.data.records import Record, read_records
from omnilm.errors import OmniError
from omnilm.evaluation.report import write_report
from omnilm.evaluation.scoring import score
from omnilm.evaluation.tasks import Task, ensure_data, load_task

logger = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
RUN_FILE = "run.json"


def build_prompt(task: Task, record: Record) -> list[dict]:
    """The record's conversation up to the answer, with the task's template applied to the last user turn."""
    messages = [dict(m) for m in record.prompt]
    if task.system and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": task.system}]})
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    media = [_sampled(p, task.video_frames) for p in messages[last]["content"] if p["type"] != "text"]
    text = "".join(p["text"] for p in messages[last]["content"] if p["type"] == "text").strip()
    try:
        prompt = task.prompt.format(text=text, **{k: v for k, v in record.fields.items() if k != "text"}).strip()
    except (KeyError, IndexError) as error:
        raise OmniError(f"task {task.source}: field 'prompt': record {record.id!r} has no field {error}") from None
    messages[last] = {"role": "user", "content": media + [{"type": "text", "text": prompt}]}
    return messages


def _sampled(part: dict, frames: int | None) -> dict:
    """A video part as the task's `video_frames` frames sampled uniformly (the model or server takes the list)."""
    if part["type"] != "video" or frames is None or isinstance(part["video"], list):
        return part
    from omnilm.media import load_video

    return {"type": "video", "video": load_video(part["video"], num_frames=frames)}


def task_records(task: Task, limit: int | None = None) -> list[Record]:
    """The task's records: its JSONL file (built on first use) or the first `limit` rows of its dataset."""
    if task.eval_data is None:
        return read_records(ensure_data(task), task.media_root, limit=limit)
    from omnilm.evaluation.hubdata import load_eval_records

    records = load_eval_records(task.eval_data, task.base_dir, limit)
    seen: dict[str, int] = {}
    for record in records:
        if record.id in seen:
            raise OmniError(f"task {task.source}: field 'data.columns.id': {record.id!r} names rows {seen[record.id]} "
                            f"and {record.line - 1}; give a unique column, or none to number the rows")
        seen[record.id] = record.line - 1
    return records


def _check_modalities(model: Any, records: list[Record], task: Task) -> None:
    supported = getattr(model, "modalities", None)
    if supported is None:  # e.g. an endpoint: the server decides
        return
    needed = {p["type"] for r in records for m in r.messages for p in m["content"] if p["type"] in MODALITIES}
    missing = sorted(needed - set(supported))
    if missing:
        raise OmniError(f"task {task.name} needs {', '.join(missing)} input but model {getattr(model, 'name', '?')} "
                        f"handles only {', '.join(supported) or 'text'}; pick a model with those encoders")


def _read_predictions(path: Path) -> dict[str, dict]:
    """Finished items from a previous run; a torn last line (crash mid-write) is dropped from the file."""
    if not path.is_file():
        return {}
    done, good_bytes = {}, 0
    with path.open("rb") as f:
        lines = f.readlines()
    for number, line in enumerate(lines, start=1):
        try:
            item = json.loads(line)
            done[str(item["id"])] = item
        except (json.JSONDecodeError, KeyError, TypeError):
            if number == len(lines):
                logger.warning("dropping an incomplete last line of %s (an interrupted write)", path)
                with path.open("r+b") as f:
                    f.truncate(good_bytes)
                break
            raise OmniError(f"{path}:{number}: not a prediction line; delete the file to start the run afresh")
        good_bytes += len(line)
    return done


def _run_signature(task: Task, model: Any) -> dict:
    return {"task": task.name, "model": getattr(model, "name", type(model).__name__), "prompt": task.prompt,
            "system": task.system, "generation": task.generation,
            "data": task.eval_data.label if task.eval_data else str(task.data)}


def _prepare_out_dir(out_dir: Path, signature: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    run_file = out_dir / RUN_FILE
    if run_file.is_file():
        previous = json.loads(run_file.read_text())
        if previous != signature:
            changed = sorted(k for k in signature if previous.get(k) != signature[k])
            raise OmniError(f"{out_dir} holds predictions of a different run (changed: {', '.join(changed)}); "
                            f"choose another --out directory or delete this one")
    else:
        run_file.write_text(json.dumps(signature, indent=2) + "\n")


def evaluate(
    model: Any,
    task: Task | str,
    out_dir: str | Path,
    *,
    limit: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> dict:
    """Run ``task`` (a Task, a built-in name or a YAML path) on ``model`` and write results to ``out_dir``.

    ``model`` is anything with ``chat_batch(list_of_messages, **generation) -> list[str]`` (an OmniLM or an
    :class:`~omnilm.evaluation.endpoint.EndpointModel`). Returns the results dict also saved as
    ``results.json``.
    """
    task = load_task(task) if isinstance(task, (str, Path)) else task
    records = task_records(task, limit)
    if task.metrics == ["recall_at_k"]:
        from omnilm.evaluation.retrieval import evaluate_retrieval

        return evaluate_retrieval(model, task, records, Path(out_dir))
    _check_modalities(model, records, task)
    out_dir = Path(out_dir)
    signature = _run_signature(task, model)
    _prepare_out_dir(out_dir, signature)
    predictions_path = out_dir / PREDICTIONS
    done = _read_predictions(predictions_path)
    size = batch_size or task.batch_size
    todo = sum(1 for r in records if r.id not in done)
    logger.info("%s: %d items, %d already done, batch size %d", task.name, len(records), len(records) - todo, size)
    start = time.perf_counter()
    with predictions_path.open("a", encoding="utf-8") as out, tqdm(
        total=len(records), initial=len(records) - todo, desc=task.name, unit="item", disable=not progress
    ) as bar:
        for begin in range(0, len(records), size):
            batch = [r for r in records[begin : begin + size] if r.id not in done]
            if not batch:
                continue
            replies = model.chat_batch([build_prompt(task, r) for r in batch], **task.generation)
            for record, raw in zip(batch, replies, strict=True):
                item = {"id": record.id, "raw": raw, "prediction": task.clean(raw)}
                done[record.id] = item
                out.write(json.dumps(item) + "\n")
            out.flush()
            os.fsync(out.fileno())
            bar.update(len(batch))
    elapsed = time.perf_counter() - start
    items = [{**done[r.id], "prediction": task.clean(done[r.id]["raw"])} for r in records]
    results = score(task, records, items)
    results.update(model=signature["model"], generation=task.generation, generated_items=todo,
                   generation_seconds=round(elapsed, 3))
    write_report(out_dir, task, records, items, results)
    return results
