"""The trainer: any stage, on Hugging Face Accelerate (one process, or N under `accelerate launch`).

Loss is the mean over every assistant token of the global batch (all micro-batches of all processes),
so gradient accumulation and the number of processes do not change what is optimised. SIGINT/SIGTERM
finish the current step, write a checkpoint and return; running the same command again resumes.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from omnilm.errors import ConfigError
from omnilm.lm import OmniLM
from omnilm.processor import IGNORE_INDEX
from omnilm.training import checkpointing as ckpt
from omnilm.training.build import build_model, make_scheduler, model_modalities, resolve_precision
from omnilm.training.config import TrainConfig
from omnilm.training.data import TrainData
from omnilm.training.metrics import MetricsLog, plot_loss
from omnilm.training.stages import (
    apply_stage,
    check_qlora_support,
    enable_gradient_checkpointing,
    param_groups,
    set_train_mode,
)

logger = logging.getLogger(__name__)

FINAL_DIR = "final"
METRICS_FILE = "metrics.jsonl"
LOSS_PNG = "loss.png"


@dataclass
class TrainResult:
    output_dir: str
    step: int  # optimizer steps done
    total_steps: int
    final_dir: str | None  # the trained model (None when interrupted)
    loss: float | None  # last step's training loss
    eval: dict[str, float] | None  # last eval metrics
    interrupted: str | None = None  # the signal that stopped training (SIGINT / SIGTERM)


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) the training `cfg` describes."""
    return Trainer(cfg).run()


class Trainer:
    def __init__(self, cfg: TrainConfig) -> None:
        from accelerate import Accelerator, PartialState
        from accelerate.utils import DistributedDataParallelKwargs, parse_flag_from_env, set_seed

        self.cfg = cfg
        opt = cfg.optim
        if cfg.stage.llm.mode == "qlora":
            check_qlora_support()  # before anything slow
        precision = resolve_precision(opt.mixed_precision)
        # Rank and world size before anything is loaded (on CPUs, multi-process needs ACCELERATE_USE_CPU=1).
        state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
        # Data first: every record is validated before a model is loaded.
        modalities = model_modalities(cfg.model)
        data_kwargs = dict(micro_batch=opt.batch_size, grad_accum=opt.grad_accum, world=state.num_processes,
                           rank=state.process_index, seed=cfg.seed)
        self.train_data = TrainData(cfg.data.train_files, cfg.data, modalities, streaming=cfg.data.streaming,
                                    **data_kwargs)
        self.eval_data = None
        if cfg.data.eval_files:
            self.eval_data = TrainData(cfg.data.eval_files, cfg.data, modalities, limit=cfg.data.max_eval_samples,
                                       **data_kwargs)
        steps_per_epoch = self.train_data.steps_per_epoch  # also checks that one global batch fits the data
        self.total_steps = opt.max_steps or max(1, round(opt.epochs * steps_per_epoch))

        set_seed(cfg.seed)
        lm, base_dir = build_model(cfg.model, cfg.seed)
        self.processor = lm.processor
        model = lm.model
        apply_stage(model, cfg.stage, base_dir=base_dir)
        if opt.gradient_checkpointing:
            enable_gradient_checkpointing(model, cfg.stage)
        set_train_mode(model)
        for data in (self.train_data, self.eval_data):
            if data is not None:
                data.attach(self.processor)

        self.accelerator = Accelerator(
            mixed_precision=precision,
            step_scheduler_with_optimizer=False,  # one schedule step per optimizer step, whatever the world size
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=len(model.connectors) > 1)],
        )
        ckpt.register_hooks(self.accelerator)
        groups = param_groups(model, cfg.stage, opt)
        optimizer = torch.optim.AdamW(groups, lr=opt.lr, betas=opt.betas)
        scheduler = make_scheduler(optimizer, opt, self.total_steps)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        self.unwrapped = self.accelerator.unwrap_model(self.model)
        self.trainable = [p for group in groups for p in group["params"]]
        self.cache = None
        if cfg.feature_cache.enabled:
            from omnilm.data.feature_cache import FeatureCache, default_root

            root = cfg.feature_cache.dir or default_root()
            self.cache = FeatureCache(root, self.unwrapped, self.processor)
        self._signal: str | None = None

    # Main loop ----------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        from tqdm.auto import tqdm

        cfg, acc = self.cfg, self.accelerator
        output = Path(cfg.output_dir)
        state = {"step": 0, "epoch": 0, "step_in_epoch": 0, "samples": 0, "global_batch": self.train_data.global_batch,
                 "processes": acc.num_processes}
        resume_from = self._resume_path()
        if resume_from is not None:
            self._check_resumable(ckpt.read_state(resume_from), resume_from)
            state = {**ckpt.load_training_checkpoint(acc, resume_from), "processes": acc.num_processes}
            logger.info("resumed from %s (step %d of %d)", resume_from, state["step"], self.total_steps)
        if state["step"] >= self.total_steps and (output / FINAL_DIR).is_dir():
            logger.info("%s is already trained (%d steps); nothing to do", output, state["step"])
            return TrainResult(str(output), state["step"], self.total_steps, str(output / FINAL_DIR), None, None)
        metrics = None
        if acc.is_main_process:
            output.mkdir(parents=True, exist_ok=True)
            (output / "train_config.yaml").write_text(cfg.to_yaml())
            metrics = MetricsLog(output / METRICS_FILE, resume_step=state["step"] if resume_from else None,
                                 tensorboard_dir=output / "tensorboard")
        bar = tqdm(total=self.total_steps, initial=state["step"], disable=not acc.is_main_process,
                   desc=f"train {cfg.stage.name}", dynamic_ncols=True)
        step, loss, eval_metrics = state["step"], None, None
        last_saved = state["step"] if resume_from is not None else None
        steps = self.train_data.steps(state["epoch"], state["step_in_epoch"])
        with self._signals():
            started = time.perf_counter()  # a step's time includes reading and collating its data
            while step < self.total_steps:
                micro = next(steps, None)
                if micro is None:  # end of an epoch
                    state["epoch"] += 1
                    state["step_in_epoch"] = 0
                    steps = self.train_data.steps(state["epoch"])
                    continue
                loss, grad_norm = self._optimizer_step(micro)
                step += 1
                state.update(step=step, step_in_epoch=state["step_in_epoch"] + 1,
                             samples=state["samples"] + self.train_data.global_batch)
                rate = self.train_data.global_batch / (time.perf_counter() - started)
                lr = self.scheduler.get_last_lr()[0]
                if metrics is not None and (step % cfg.log_every == 0 or step == self.total_steps):
                    metrics.log({"step": step, "epoch": state["epoch"], "loss": loss, "lr": lr,
                                 "grad_norm": grad_norm, "samples_per_s": rate, "samples": state["samples"]})
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", samples_s=f"{rate:.1f}")
                if self.eval_data is not None and cfg.eval_every and step % cfg.eval_every == 0 \
                        and step < self.total_steps:
                    eval_metrics = self._evaluate(step, metrics)
                stop = self._stop_requested()
                if stop or (cfg.save_every and step % cfg.save_every == 0) or step == self.total_steps:
                    ckpt.save_training_checkpoint(acc, self.model, self.processor, output, dict(state), cfg.keep_last)
                    last_saved = step
                if stop:
                    break
                started = time.perf_counter()
        bar.close()
        if self._signal is not None:
            logger.warning("stopped by %s at step %d; checkpoint saved — run the same command to resume",
                           self._signal, step)
            if metrics is not None:
                metrics.close()
            return TrainResult(str(output), step, self.total_steps, None, loss, eval_metrics, self._signal)
        if last_saved != step:
            ckpt.save_training_checkpoint(acc, self.model, self.processor, output, dict(state), cfg.keep_last)
        if self.eval_data is not None:
            eval_metrics = self._evaluate(step, metrics)
        final = self._export(output / FINAL_DIR)
        if metrics is not None:
            metrics.close()
            plot_loss(output / METRICS_FILE, output / LOSS_PNG)
        return TrainResult(str(output), step, self.total_steps, str(final), loss, eval_metrics)

    def _optimizer_step(self, micro: list[dict[str, Any]]) -> tuple[float, float | None]:
        """Accumulate gradients over this process's micro-batches, sync once, step. Returns (loss, grad norm)."""
        acc, world = self.accelerator, self.accelerator.num_processes
        batches = [self._prepare_batch(batch) for batch in micro]
        local_items = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
        items = self._sum(torch.tensor(float(local_items), device=acc.device))  # assistant tokens, global batch
        total = torch.zeros((), device=acc.device)
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            with contextlib.nullcontext() if last else acc.no_sync(self.model):
                loss, _, _ = self._token_loss(batch, items)  # this micro-batch's token sum / global token count
                acc.backward(loss * world)  # DDP averages gradients over processes; undo that
            total += loss.detach().float()
        grad_norm = None
        if self.cfg.optim.max_grad_norm is not None:
            grad_norm = float(acc.clip_grad_norm_(self.trainable, self.cfg.optim.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(self._sum(total)), grad_norm

    @torch.no_grad()
    def _evaluate(self, step: int, metrics: MetricsLog | None) -> dict[str, float]:
        """Mean loss and next-token accuracy over the assistant tokens of the eval records (all processes)."""
        self.model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=self.accelerator.device)  # loss sum, tokens, correct
        for batch in self.eval_data.shard():
            loss, logits, targets = self._token_loss(self._prepare_batch(batch), 1)  # loss = sum over tokens
            correct = (logits.argmax(-1) == targets).sum()
            sums += torch.stack([loss.double(), torch.tensor(targets.numel()).double(), correct.double()]).to(sums)
        sums = self._sum(sums)
        set_train_mode(self.unwrapped)
        result = {"eval_loss": float(sums[0] / sums[1]), "eval_token_accuracy": float(sums[2] / sums[1])}
        logger.info("step %d: eval loss %.4f, token accuracy %.3f", step, *result.values())
        if metrics is not None:
            metrics.log({"step": step, **result})
        return result

    def _token_loss(self, batch: dict[str, Any], items) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cross-entropy summed over the assistant tokens, divided by `items`; plus their logits and targets.

        The LM head runs only where the next token is a label (a boolean `logits_to_keep`): the same loss
        and gradients as the full (B, L, V) logits, without computing and storing them.
        """
        labels = batch.pop("labels")  # (B, L)
        targets = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # (B, L): token t predicts t+1
        keep = targets != IGNORE_INDEX  # (B, L)
        logits = self.model(**batch, logits_to_keep=keep).logits.float()  # (N_label_tokens, V)
        targets = targets[keep]  # (N_label_tokens,)
        loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum") / items
        return loss, logits, targets

    # Helpers ------------------------------------------------------------------------------------
    def _prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        batch = {k: v.to(self.accelerator.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        if self.cache is not None:
            return self.cache.apply(self.unwrapped, batch)
        batch.pop("media_items", None)
        return batch

    def _sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes == 1:
            return tensor
        return self.accelerator.reduce(tensor, reduction="sum")

    def _export(self, directory: Path) -> Path:
        """Save the trained model as an omnilm checkpoint (adapters merged when export.merge_lora)."""
        if self.accelerator.is_main_process:
            model = self.unwrapped
            if self.cfg.export.merge_lora and model.config.lora is not None:
                from omnilm.lora import merge_lora

                merge_lora(model)
            OmniLM(model, self.processor).save(directory, full=self.cfg.export.full)
            logger.info("saved the trained model to %s", directory)
        self.accelerator.wait_for_everyone()
        return directory

    def _resume_path(self) -> Path | None:
        resume = self.cfg.resume
        if resume == "never":
            return None
        if resume == "auto":
            return ckpt.latest_checkpoint(self.cfg.output_dir)
        return Path(resume)

    def _check_resumable(self, state: dict[str, Any], path: Path) -> None:
        if state.get("global_batch", self.train_data.global_batch) != self.train_data.global_batch:
            raise ConfigError(f"optim.batch_size: {path} was trained with a global batch of {state['global_batch']}, "
                              f"this run has {self.train_data.global_batch}; the data position would not match")

    def _stop_requested(self) -> bool:
        flag = torch.tensor(float(self._signal is not None), device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            flag = self.accelerator.reduce(flag, reduction="max")
        return bool(flag > 0)

    @contextlib.contextmanager
    def _signals(self):
        """SIGINT/SIGTERM set a flag checked after each step; a second SIGINT interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handle(signum, frame):
            if self._signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._signal = signal.Signals(signum).name
            logger.warning("%s received: finishing this step, then saving a checkpoint", self._signal)

        previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
