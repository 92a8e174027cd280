"""The token objective: cross-entropy over the assistant tokens of chat records, for an OmniModel (any stage).

Loss is the mean over every assistant token of the global batch (all micro-batches of all processes),
so gradient accumulation and the number of processes do not change what is optimised; with
`stage.loss.average: record`, the mean over the global batch's records of each record's mean token loss.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from omnilm.processor import IGNORE_INDEX
from omnilm.training.build import build_model, model_config
from omnilm.training.config import TrainConfig
from omnilm.training.data import Collator, TrainData, load_records, record_dataset
from omnilm.training.stages import (
    apply_stage,
    check_qlora_support,
    enable_gradient_checkpointing,
    param_groups,
    set_train_mode,
)

logger = logging.getLogger(__name__)


class LMObjective:
    collator = Collator  # rows → batches; a subclass may add what its loss needs
    row_extra = None  # record → extra row fields (a subclass's), or None

    def __init__(self, cfg: TrainConfig, *, world: int, rank: int) -> None:
        self.cfg = cfg
        if cfg.stage.llm.mode == "qlora":
            check_qlora_support()  # before anything slow
        data = cfg.data
        modalities = model_config(cfg.model).modalities
        kwargs = {"micro_batch": cfg.optim.batch_size, "grad_accum": cfg.optim.grad_accum, "world": world,
                  "rank": rank, "seed": cfg.seed}
        if data.streaming:  # validates every record up front, then reads the JSONL files again lazily
            rows = load_records(data.train_files, data.media_root, modalities)
            self.train_data = TrainData(rows, data, stream_files=data.train_files, **kwargs)
        else:  # indexed sources: validated (all or a sample, data.check), read by index
            self.train_data = TrainData(record_dataset(data, modalities, seed=cfg.seed, extra=self.row_extra), data,
                                        **kwargs)
        self.eval_data = None
        if data.eval_files:
            rows = record_dataset(data, modalities, seed=cfg.seed, split="eval", limit=data.max_eval_samples,
                                  extra=self.row_extra)
            self.eval_data = TrainData(rows, data, **kwargs)

    def build(self, device: torch.device):
        cfg = self.cfg
        self.lm, base_dir = build_model(cfg.model, cfg.seed)
        model = self.lm.model
        apply_stage(model, cfg.stage, base_dir=base_dir)
        if cfg.optim.gradient_checkpointing:
            enable_gradient_checkpointing(model, cfg.stage)
        self.train_mode()
        for data in (self.train_data, self.eval_data):
            if data is not None:
                data.attach(self.collator(self.lm.processor))
        self.find_unused_parameters = len(model.connectors) > 1
        self.cache = None
        if cfg.feature_cache.enabled:
            from omnilm.data.feature_cache import FeatureCache, default_root

            self.cache = FeatureCache(cfg.feature_cache.dir or default_root(), model, self.lm.processor)
        return self.lm

    def param_groups(self) -> list[dict[str, Any]]:
        return param_groups(self.lm.model, self.cfg.stage, self.cfg.optim)

    def prepare(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        if self.cache is not None:
            return self.cache.apply(self.lm.model, batch)
        batch.pop("media_items", None)
        return batch

    def items(self, batch: dict[str, Any]) -> int:
        labelled = batch["labels"][:, 1:] != IGNORE_INDEX  # (B, L-1)
        if self.cfg.stage.loss.average == "record":
            return int(labelled.any(dim=1).sum())  # records with assistant tokens
        return int(labelled.sum())  # assistant tokens

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        if self.cfg.stage.loss.average == "record":
            rows = label_positions(batch["labels"]).nonzero()[:, 0]  # (N_label_tokens,): the record of each
            per_token = self._token_loss(model, batch, reduction="none")[0]  # (N_label_tokens,)
            return (per_token / torch.bincount(rows)[rows]).sum()  # Σ over records of their mean token loss
        return self._token_loss(model, batch)[0]

    def has_eval(self) -> bool:
        return self.eval_data is not None

    @torch.no_grad()
    def eval_metrics(self, model: torch.nn.Module, reduce) -> dict[str, float]:
        """Mean loss and next-token accuracy over the assistant tokens of the eval records (all processes)."""
        model.eval()
        device = next(self.lm.model.parameters()).device
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, tokens, correct
        for batch in self.eval_data.shard():
            loss, logits, targets = self._token_loss(model, self.prepare(batch, device))
            correct = (logits.argmax(-1) == targets).sum()
            sums += torch.stack([loss.double(), torch.tensor(targets.numel()).double(), correct.double()]).to(sums)
        sums = reduce(sums)
        return {"eval_loss": float(sums[0] / sums[1]), "eval_token_accuracy": float(sums[2] / sums[1])}

    def train_mode(self) -> None:
        model = self.lm.model
        set_train_mode(model, [model.llm, model.vision, model.audio, model.video, *model.connectors.values()])

    def export(self, directory: Path) -> None:
        """The trained model as an omnilm checkpoint (adapters merged when export.merge_lora)."""
        if self.cfg.export.merge_lora and self.lm.model.config.lora is not None:
            from omnilm.lora import merge_lora

            merge_lora(self.lm.model)
        self.lm.save(directory, full=self.cfg.export.full)

    @staticmethod
    def _token_loss(model, batch: dict[str, Any], reduction: str = "sum") -> tuple[torch.Tensor, torch.Tensor,
                                                                                   torch.Tensor]:
        """Cross-entropy summed over the assistant tokens (`reduction="none"`: one per token); plus their
        logits and targets.

        The LM head runs only where the next token is a label (a boolean `logits_to_keep`): the same loss
        and gradients as the full (B, L, V) logits, without computing and storing them.
        """
        labels = batch.pop("labels")  # (B, L)
        keep = label_positions(labels)  # (B, L)
        logits = model(**batch, logits_to_keep=keep).logits.float()  # (N_label_tokens, V)
        targets = labels[:, 1:][keep[:, :-1]]  # (N_label_tokens,): token t predicts t+1
        return torch.nn.functional.cross_entropy(logits, targets, reduction=reduction), logits, targets


def label_positions(labels: torch.Tensor) -> torch.Tensor:
    """(B, L) labels → (B, L) bool: positions whose next token is a label (row-major: the order of the loss)."""
    return torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX) != IGNORE_INDEX
