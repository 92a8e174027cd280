"""Training data: sources → an indexed record dataset (or rows in memory) → this process's micro-batches.

Rows are what an objective trains on (chat records for the token loss, caption pairs for the contrastive
loss); its collator turns a list of rows into a batch. Chat records come from the sources of
`data.train` (omnilm.data.sources: LLaVA JSON arrays and JSONL, hub datasets and parquet, WebDataset
tars), mixed by weight (omnilm.data.mixture) and read by index when a batch needs them: memory does not
grow with the record count. They are validated before training (all of them, or a sample for big
sources: `data.check`), and each is parsed again when read; a bad one found then stops the run naming
its place, or is skipped and reported (`data.on_error: skip`). The order is a pure function of (seed,
epoch, step): a global batch of `batch_size × processes × grad_accum` records is cut into micro-batches,
and process r takes its slice of each. So resuming at step s reproduces the data exactly, and N
processes see the same global batches as one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

import numpy as np

from omnilm.config import MODALITIES
from omnilm.data.mixture import Mixture, validate
from omnilm.data.records import RecordError, parse_record, read_records
from omnilm.data.sources import SourceSpec, open_source
from omnilm.errors import ConfigError, OmniError
from omnilm.processor import OmniProcessor
from omnilm.training.config import DataSection

logger = logging.getLogger(__name__)


def load_records(files: list[str], media_root: str | None, modalities: tuple[str, ...], limit: int | None = None):
    """Validated records of `files` as rows {"messages": JSON text, "where": "file:line"}.

    Beyond records.py's checks (JSON, shape, media files, placeholder counts, an assistant turn), each
    record's media must be of a kind the model takes.
    """
    rows, problems = [], []
    for file in files:
        for record in read_records(file, media_root, limit=limit):
            where = f"{file}:{record.line}"
            kinds = {part["type"] for m in record.messages for part in m["content"] if part["type"] in MODALITIES}
            unsupported = sorted(kinds - set(modalities))
            if unsupported:
                problems.append(f"{where}: the model takes no {', '.join(unsupported)} input "
                                f"(it takes {', '.join(modalities) or 'text only'})")
                continue
            rows.append({"messages": json.dumps(record.messages), "where": where})
    if problems:
        raise RecordError(f"{len(problems)} record(s) the model cannot take:\n  " + "\n  ".join(problems[:20]))
    return rows


def _stream_rows(files: list[str], media_root: str | None) -> Iterator[dict[str, str]]:
    """Rows of `files` read lazily (the files were validated before training started)."""
    for file in files:
        root = Path(media_root) if media_root is not None else Path(file).parent
        with open(file, encoding="utf-8") as handle:
            for index, line in enumerate(handle):
                if line.strip():
                    record = parse_record(json.loads(line), root, index)
                    yield {"messages": json.dumps(record.messages), "where": f"{file}:{index + 1}"}


class RecordDataset(torch.utils.data.Dataset):
    """Records of a mixture by index, as rows {"messages", "where", **extra(record)}; a record that fails to
    parse or holds media the model does not take becomes {"error", "where"} (the batch guard stops or skips it)."""

    def __init__(self, mixture: Mixture, modalities: tuple[str, ...], limit: int | None = None,
                 extra: Callable[[Any], dict[str, Any]] | None = None) -> None:
        self.mixture, self.modalities, self.extra = mixture, modalities, extra
        self.size = len(mixture) if limit is None else min(limit, len(mixture))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            record = self.mixture.record(int(index), self.modalities)
        except (ValueError, KeyError, TypeError, OSError) as error:
            message = f"missing field {error}" if isinstance(error, KeyError) else str(error)
            return {"error": message, "where": self.mixture.where(int(index))}
        row = {"messages": record.messages, "where": self.mixture.where(int(index))}
        return {**row, **self.extra(record)} if self.extra is not None else row


def record_dataset(section: DataSection, modalities: tuple[str, ...], *, seed: int, split: str = "train",
                   limit: int | None = None, extra: Callable[[Any], dict[str, Any]] | None = None) -> RecordDataset:
    """The sources of `data.train` (or `data.eval`) opened, mixed and validated (RecordError lists bad records)."""
    specs = section.train_files if split == "train" else section.eval_files
    sources = []
    for spec in specs:
        if isinstance(spec, str):
            spec = SourceSpec(path=spec, media_root=section.media_root)
        elif spec.media_root is None and section.media_root is not None:
            spec = dataclasses.replace(spec, media_root=section.media_root)
        sources.append(open_source(spec, on_error=section.on_error))
    mixture = Mixture(sources, seed=seed)
    logger.info("data.%s: %s", split, mixture.describe())
    dataset = RecordDataset(mixture, modalities, limit, extra)
    validate(mixture, modalities, check=section.check, sample=section.check_sample, seed=seed, first=limit)
    return dataset


class Collator:
    """Rows → one padded batch (right padding, assistant-only labels) + each media item's file."""

    def __init__(self, processor: OmniProcessor) -> None:
        self.processor = processor

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        conversations = [json.loads(m) if isinstance(m, str) else m for m in (row["messages"] for row in rows)]
        try:
            batch = self.processor(conversations, return_labels=True, padding_side="right")
        except OmniError as err:
            where = ", ".join(row["where"] for row in rows)
            raise type(err)(f"in the batch of {where}: {err}") from None
        batch["media_items"] = media_items(conversations)  # (modality → items in processor order)
        return batch


def media_items(conversations: list[list[dict]]) -> dict[str, list]:
    """Media items of a batch per modality, in the order the processor stacks them."""
    items: dict[str, list] = {m: [] for m in MODALITIES}
    for messages in conversations:
        for message in messages:
            content = message["content"]
            for part in content if isinstance(content, list) else []:
                if part.get("type") in MODALITIES:
                    items[part["type"]].append(part[part["type"]])
    return items


class TrainData:
    """One split: rows (a RecordDataset, a `datasets.Dataset` of in-memory rows, or an `IterableDataset`
    of `stream_files`) and the batch plan."""

    def __init__(
        self,
        rows: RecordDataset | list[dict[str, Any]],
        section: DataSection,
        *,
        micro_batch: int,
        grad_accum: int,
        world: int,
        rank: int,
        seed: int,
        stream_files: list[str] | None = None,
    ) -> None:
        import datasets

        self.num_records = len(rows)
        self.streaming = stream_files is not None
        if self.streaming:  # the rows were read to validate them; training reads the files again, lazily
            self.dataset = datasets.IterableDataset.from_generator(
                _stream_rows, gen_kwargs={"files": stream_files, "media_root": section.media_root}
            )
        else:
            self.dataset = rows if isinstance(rows, RecordDataset) else datasets.Dataset.from_list(rows)
        self.section = section
        self.collator: Callable[[list[dict]], dict[str, Any]] | None = None  # set by attach() once the model is built
        self.micro_batch, self.grad_accum, self.world, self.rank, self.seed = micro_batch, grad_accum, world, rank, seed

    def attach(self, collator: Callable[[list[dict]], dict[str, Any]]) -> TrainData:
        self.collator = BatchGuard(collator, self.section.on_error)
        return self

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.world * self.grad_accum

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one pass (an incomplete last global batch is dropped)."""
        steps = self.num_records // self.global_batch
        if steps == 0:
            raise ConfigError(
                f"optim.batch_size: the global batch ({self.micro_batch} × {self.world} processes × "
                f"{self.grad_accum} accumulation = {self.global_batch}) exceeds the {self.num_records} training records"
            )
        return steps

    def _rank_slices(self, global_rows: list) -> list[list]:
        """This process's micro-batches of one global batch: micro a of rank r is slot a·world + r."""
        b = self.micro_batch
        return [global_rows[(a * self.world + self.rank) * b : (a * self.world + self.rank + 1) * b]
                for a in range(self.grad_accum)]

    def order(self, epoch: int) -> np.ndarray:
        """The record order of `epoch` (int64; 8 bytes a record, the only per-record memory of a run)."""
        if not self.section.shuffle:
            return np.arange(self.num_records)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_records, generator=generator).numpy()

    def _plan(self, order: np.ndarray, start_step: int) -> Iterator[list[int]]:
        """This process's micro-batches (record indices) from `start_step` on, made as the loader asks."""
        for step in range(start_step, self.steps_per_epoch):
            yield from self._rank_slices(order[step * self.global_batch : (step + 1) * self.global_batch].tolist())

    def steps(self, epoch: int, start_step: int = 0) -> Iterator[list[dict[str, Any]]]:
        """For each optimizer step of `epoch` from `start_step`: this process's `grad_accum` micro-batches."""
        if self.streaming:
            yield from self._stream_steps(epoch, start_step)
            return
        workers = self.section.num_workers
        loader = DataLoader(self.dataset, batch_sampler=self._plan(self.order(epoch), start_step),
                            collate_fn=self.collator, num_workers=workers, prefetch_factor=4 if workers else None,
                            persistent_workers=False, generator=_own_generator())
        yield from _group(iter(loader), self.grad_accum)

    def _stream_steps(self, epoch: int, start_step: int) -> Iterator[list[dict[str, Any]]]:
        dataset = self.dataset
        if self.section.shuffle:
            dataset = dataset.shuffle(seed=self.seed, buffer_size=self.section.shuffle_buffer)
            dataset.set_epoch(epoch)
        dataset = dataset.skip(start_step * self.global_batch)
        pending: list[dict] = []
        for row in dataset:
            pending.append(row)
            if len(pending) == self.global_batch:
                yield [self.collator(rows) for rows in self._rank_slices(pending)]
                pending = []

    def shard(self) -> Iterator[dict[str, Any]]:
        """Every record once, this process's share (record i goes to process i mod world), in micro-batches."""
        if self.streaming:
            raise ConfigError("data.eval: evaluation data is read in full; it cannot be streamed")
        mine = list(range(self.rank, self.num_records, self.world))
        plan = [mine[i : i + self.micro_batch] for i in range(0, len(mine), self.micro_batch)]
        yield from DataLoader(self.dataset, batch_sampler=plan, collate_fn=self.collator, generator=_own_generator())


class BatchGuard:
    """The collator, with bad records kept out of batches: `stop` raises naming each one, `skip` drops it
    with a warning (the micro-batch is then smaller; a micro-batch with no good record stops the run)."""

    def __init__(self, collator: Callable[[list[dict]], dict[str, Any]], on_error: str) -> None:
        self.collator, self.on_error = collator, on_error

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        bad = [row for row in rows if "error" in row]
        good = [row for row in rows if "error" not in row]
        if not bad:
            try:
                return self.collator(good)
            except OmniError:  # decoding media failed: find the records to blame, one by one
                bad = [{"where": row["where"], "error": self._error_of(row)} for row in good]
                bad = [row for row in bad if row["error"] is not None]
                if not bad:
                    raise
                blamed = {row["where"] for row in bad}
                good = [row for row in good if row["where"] not in blamed]
        problems = [f"{row['where']}: {row['error']}" for row in bad]
        if self.on_error == "stop" or not good:
            why = "" if good else " (no good record left in the micro-batch)"
            raise RecordError("bad record(s) while training" + why + ":\n  " + "\n  ".join(problems)
                              + "\nfix or remove them, or set data.on_error: skip to skip bad records")
        for problem in problems:
            logger.warning("skipped a bad record: %s", problem)
        return self.collator(good)

    def _error_of(self, row: dict[str, Any]) -> str | None:
        try:
            self.collator([row])
        except OmniError as error:
            return str(error).removeprefix(f"in the batch of {row['where']}: ")
        return None


def _own_generator() -> torch.Generator:
    """A DataLoader seeds its workers from a generator; without its own it draws from the global RNG,
    which would shift dropout after a resume."""
    return torch.Generator().manual_seed(0)


def _group(batches: Iterator, size: int) -> Iterator[list]:
    while True:
        group = [batch for _, batch in zip(range(size), batches)]
        if len(group) < size:
            return
        yield group
