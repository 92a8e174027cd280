"""Distillation from text to speech (`stage.loss.type: distill`), as Ultravox trains its audio connector.

A spoken record (`omnilm data spoken` keeps each spoken turn's words in `spoken_text`) is also collated as
its text twin: every audio part replaced by the words it speaks. The teacher is the model itself reading
the twin, under no gradient; the student is the model hearing the audio. At each assistant token the loss is
KL(teacher ‖ student) of the next-token distributions at `temperature`, plus `ce_weight` × cross-entropy;
records without speech keep the plain cross-entropy.

Teacher logits are computed on the fly, not cached: the stage may train the LLM (LoRA) too, so cached
logits would go stale, and a full distribution is one float per vocabulary entry (151,936 for Qwen2.5) for
every answer token. The extra forward pass, without backward, costs about a third of a training step on
the spoken records.
"""

from __future__ import annotations

import json
from typing import Any

import torch
import torch.nn.functional as F

from omnilm.training.data import Collator
from omnilm.training.lm_objective import LMObjective, label_positions


def text_twin(messages: list[dict], spoken_text: list[str]) -> list[dict] | None:
    """`messages` with their k-th audio part replaced by the text `spoken_text[k]`; None without audio.

    A count mismatch (a record edited by hand) raises ValueError naming both counts.
    """
    audio = sum(part["type"] == "audio" for m in messages for part in m["content"])
    if audio == 0:
        return None
    if audio != len(spoken_text):
        raise ValueError(f"the record has {audio} audio part(s) but {len(spoken_text)} spoken_text entries; "
                         "distillation needs the words of every clip (build it with `omnilm data spoken`)")
    words = iter(spoken_text)
    return [{**m, "content": [{"type": "text", "text": next(words)} if part["type"] == "audio" else part
                              for part in m["content"]]} for m in messages]


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Σ over positions of KL(softmax(teacher / T) ‖ softmax(student / T)); logits (N, V) each → scalar."""
    teacher_logp = F.log_softmax(teacher.float() / temperature, dim=-1)  # (N, V)
    student_logp = F.log_softmax(student.float() / temperature, dim=-1)  # (N, V)
    return F.kl_div(student_logp, teacher_logp, reduction="sum", log_target=True)


def _row_extra(record) -> dict[str, str]:
    twin = text_twin(record.messages, record.fields.get("spoken_text") or [])
    return {"teacher": json.dumps(twin) if twin is not None else ""}


class DistillCollator(Collator):
    """A batch as `Collator` makes it, plus `teacher`: the text twins of its spoken rows collated alike, and
    `teacher_rows` (S,): the row of the batch each twin belongs to."""

    def __call__(self, rows: list[dict[str, str]]) -> dict[str, Any]:
        batch = super().__call__(rows)
        spoken = [i for i, row in enumerate(rows) if row.get("teacher")]
        if spoken:
            batch["teacher"] = super().__call__([{"messages": rows[i]["teacher"], "where": rows[i]["where"]}
                                                 for i in spoken])
            batch["teacher_rows"] = torch.tensor(spoken)
        return batch


class DistillObjective(LMObjective):
    """The token objective with text-to-speech distillation on spoken records (see the module docstring)."""

    collator = DistillCollator
    row_extra = staticmethod(_row_extra)

    def prepare(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        teacher = batch.pop("teacher", None)
        prepared = super().prepare(batch, device)
        if teacher is not None:
            prepared["teacher"] = super().prepare(teacher, device)
        return prepared

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        teacher = batch.pop("teacher", None)
        rows = batch.pop("teacher_rows", None)
        keep = label_positions(batch["labels"])  # (B, L): where the next token is an assistant token
        loss, logits, targets = self._token_loss(model, batch, reduction="none")  # (N,), (N, V), (N,)
        if teacher is None:
            return loss.sum()
        teacher_logits = self._teacher_logits(teacher)  # (N_spoken, V)
        row_of = keep.nonzero()[:, 0]  # (N,): the batch row of each label position
        spoken = torch.isin(row_of, rows.to(row_of.device))  # (N,)
        if int(spoken.sum()) != teacher_logits.shape[0]:
            raise ValueError(f"a spoken record and its text twin have different answers ({int(spoken.sum())} vs "
                             f"{teacher_logits.shape[0]} assistant tokens); check its spoken_text")
        settings = self.cfg.stage.loss
        kl = distillation_loss(logits[spoken], teacher_logits, settings.temperature)
        return loss[~spoken].sum() + settings.ce_weight * loss[spoken].sum() + kl

    @torch.no_grad()
    def _teacher_logits(self, teacher: dict[str, Any]) -> torch.Tensor:
        """The model's logits at the twins' assistant positions (N_spoken, V), without dropout or gradient."""
        model = self.lm.model
        model.eval()
        try:
            labels = teacher.pop("labels")
            return model(**teacher, logits_to_keep=label_positions(labels)).logits.float()
        finally:
            self.train_mode()

