"""Several sources as one indexed sequence, each drawn `weight` times per epoch, and their validation.

A source of N records with weight w contributes round(w × N) records to an epoch: w = 2 repeats it,
w = 0.5 takes a fixed seeded half (a non-integer weight draws its partial pass from a seeded permutation
of the source). Record j of the mixture is a pure function of (sources, weights, seed), so a shuffled
epoch order over the mixture resumes exactly at any step.

Validation reads records through the same path training does. ``check: full`` validates every record
before training; ``check: sample`` validates a seeded sample (``check_sample`` records per source, media
bytes decoded); ``auto`` is full up to ``FULL_CHECK_LIMIT`` records and sampled above. Records not
checked up front are still parsed when training reads them, and a bad one stops the run or is skipped and
reported (``data.on_error``), naming its ``file:line`` / row / ``shard:key``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from omnilm.config import MODALITIES
from omnilm.data.records import Record, RecordError
from omnilm.data.sources import Source
from omnilm.errors import OmniError

logger = logging.getLogger(__name__)

CHECKS = ("auto", "full", "sample")
FULL_CHECK_LIMIT = 50_000
_MAX_REPORTED = 20


class Mixture:
    """Sources with weights as one sequence of records (see the module docstring)."""

    def __init__(self, sources: list[Source], *, seed: int = 0) -> None:
        for source in sources:
            if not len(source):
                raise RecordError(f"{source.spec.label} holds no records")
        self.sources = sources
        counts = [max(1, round(source.spec.weight * len(source))) for source in sources]
        self.bounds = np.cumsum([0, *counts])  # (S + 1,) where each source's records start
        self.perms = [None if float(source.spec.weight).is_integer() else
                      np.random.default_rng([seed, i]).permutation(len(source)) for i, source in enumerate(sources)]

    def __len__(self) -> int:
        return int(self.bounds[-1])

    def locate(self, index: int) -> tuple[Source, int]:
        """(source, row) of mixture record `index`."""
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} of a mixture of {len(self)}")
        s = int(np.searchsorted(self.bounds, index, side="right")) - 1
        local = (index - int(self.bounds[s])) % len(self.sources[s])
        perm = self.perms[s]
        return self.sources[s], int(perm[local]) if perm is not None else local

    def where(self, index: int) -> str:
        source, row = self.locate(index)
        return source.where(row)

    def record(self, index: int, modalities: tuple[str, ...] | None = None) -> Record:
        """Record `index`, validated (ValueError naming the problem; not the place)."""
        source, row = self.locate(index)
        record = source.record(row)
        if modalities is not None:
            check_kinds(record, modalities)
        return record

    def describe(self) -> str:
        parts = [f"{source.spec.label} ×{source.spec.weight:g} → {int(b - a)}"
                 for source, a, b in zip(self.sources, self.bounds[:-1], self.bounds[1:])]
        return f"{len(self)} records per epoch: " + ", ".join(parts)


def check_kinds(record: Record, modalities: tuple[str, ...]) -> None:
    """ValueError when the record holds media of a kind the model does not take."""
    kinds = {p["type"] for m in record.messages for p in m["content"] if p["type"] in MODALITIES}
    unsupported = sorted(kinds - set(modalities))
    if unsupported:
        raise ValueError(f"the model takes no {', '.join(unsupported)} input "
                         f"(it takes {', '.join(modalities) or 'text only'})")


def check_media(record: Record) -> None:
    """Decode the media a record holds as bytes (files on disk were checked to exist)."""
    from omnilm.media import load_audio, load_image

    for message in record.messages:
        for part in message["content"]:
            item = part.get(part["type"])
            if not isinstance(item, bytes):
                continue
            if part["type"] == "image":
                load_image(item)
            elif part["type"] == "audio":
                load_audio(item)
            elif not item:
                raise ValueError(f"empty {part['type']} bytes")


def _checked_rows(mixture: Mixture, check: str, sample: int, seed: int,
                  first: int | None) -> Iterator[tuple[Source, int]]:
    """(source, row) of each record to validate up front."""
    if first is not None:  # held-out records: the ones used, all of them
        yield from (mixture.locate(i) for i in range(min(first, len(mixture))))
        return
    full = check == "full" or (check == "auto" and sum(len(s) for s in mixture.sources) <= FULL_CHECK_LIMIT)
    for i, source in enumerate(mixture.sources):
        if full or len(source) <= sample:
            rows = range(len(source))
        else:
            rows = np.sort(np.random.default_rng([seed, i, 1]).choice(len(source), size=sample, replace=False))
            logger.info("%s: validating a sample of %d of %d records (the rest as training reads them)",
                        source.spec.label, sample, len(source))
        yield from ((source, int(row)) for row in rows)


def validate(mixture: Mixture, modalities: tuple[str, ...], *, check: str = "auto", sample: int = 2000,
             seed: int = 0, first: int | None = None) -> int:
    """Check records up front (see the module docstring; `first`: exactly the first N mixture records);
    RecordError lists each bad one. Returns how many were checked."""
    problems, checked = [], 0
    for source, row in _checked_rows(mixture, check, sample, seed, first):
        checked += 1
        try:
            record = source.record(row)
            check_kinds(record, modalities)
            check_media(record)
        except (ValueError, KeyError, TypeError, OSError) as error:  # OmniError/MediaError are ValueErrors
            problems.append(f"{source.where(row)}: {_describe(error)}")
    for source in mixture.sources:
        problems += [f"skipped shard {skipped}" for skipped in source.skipped]
    if any(not p.startswith("skipped shard") for p in problems):
        shown = "\n  ".join(problems[:_MAX_REPORTED])
        more = f"\n  ... and {len(problems) - _MAX_REPORTED} more" if len(problems) > _MAX_REPORTED else ""
        raise RecordError(f"{len(problems)} invalid record(s); fix them and run again:\n  {shown}{more}")
    return checked


def _describe(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"missing field {error}"
    return str(error) if isinstance(error, (OmniError, ValueError)) else f"{type(error).__name__}: {error}"
