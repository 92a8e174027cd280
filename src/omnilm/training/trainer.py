"""The trainer: any stage of any kind of model, on Hugging Face Accelerate (one process, or N under
`accelerate launch`).

The trainer owns what every run shares: Accelerate, optimizer and schedule, data position, checkpoints,
signals, metrics. What depends on the kind of model is its objective's: `LMObjective` (an OmniModel, token
loss on chat records) or `ContrastiveObjective` (a dual encoder, InfoNCE on image–caption pairs). An
objective gives `build(device)` → the wrapper (`.model`, `.save(dir)`) with the stage applied, and
`train_data`; `param_groups()`; `prepare(batch, device)`; `items(batch)` and `loss(model, batch)` (summed
over those items); `has_eval()`, `eval_metrics(model, reduce)`; `train_mode()`; `export(dir)`;
`find_unused_parameters` (DDP).

The loss is the mean over the objective's items (assistant tokens, or micro-batches) of the global batch,
so gradient accumulation and the number of processes do not change what is optimised. SIGINT/SIGTERM
finish the current step, write a checkpoint and return; running the same command again resumes exactly
(weights, optimizer, schedule, RNG, data position).
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

from omnilm.dual.config import KIND as DUAL_KIND
from omnilm.errors import ConfigError
from omnilm.training import checkpointing as ckpt
from omnilm.training.build import make_scheduler, resolve_precision
from omnilm.training.config import TrainConfig
from omnilm.training.metrics import MetricsLog, plot_loss

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
    seconds: dict[str, float] | None = None  # wall time of setup (data, model, cached features), train, eval


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) the training `cfg` describes."""
    return Trainer(cfg).run()


def make_objective(cfg: TrainConfig, *, world: int, rank: int):
    """The objective of `cfg.model`'s kind; it reads and checks the data before any model loads."""
    kind = cfg.model.kind
    cfg.check_kind(kind)
    if kind == DUAL_KIND:
        from omnilm.training.contrastive import ContrastiveObjective

        return ContrastiveObjective(cfg, world=world, rank=rank)
    if cfg.stage.loss.type == "distill":
        from omnilm.training.distill import DistillObjective

        return DistillObjective(cfg, world=world, rank=rank)
    from omnilm.training.lm_objective import LMObjective

    return LMObjective(cfg, world=world, rank=rank)


class Trainer:
    def __init__(self, cfg: TrainConfig) -> None:
        from accelerate import Accelerator, PartialState
        from accelerate.utils import DistributedDataParallelKwargs, parse_flag_from_env, set_seed

        setup_started = time.perf_counter()
        self.cfg = cfg
        opt = cfg.optim
        precision = resolve_precision(opt.mixed_precision)
        # Rank and world size before anything is loaded (on CPUs, multi-process needs ACCELERATE_USE_CPU=1).
        state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
        self.objective = make_objective(cfg, world=state.num_processes, rank=state.process_index)  # data checked first
        set_seed(cfg.seed)
        self.wrapper = self.objective.build(state.device)
        self.train_data = self.objective.train_data
        steps_per_epoch = self.train_data.steps_per_epoch  # also checks that one global batch fits the data
        self.total_steps = opt.max_steps or max(1, round(opt.epochs * steps_per_epoch))

        self.accelerator = Accelerator(
            mixed_precision=precision,
            step_scheduler_with_optimizer=False,  # one schedule step per optimizer step, whatever the world size
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=self.objective.find_unused_parameters)],
        )
        ckpt.register_hooks(self.accelerator)
        groups = self.objective.param_groups()
        optimizer = torch.optim.AdamW(groups, lr=opt.lr, betas=opt.betas)
        scheduler = make_scheduler(optimizer, opt, self.total_steps)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(self.wrapper.model, optimizer, scheduler)
        self.trainable = [p for group in groups for p in group["params"]]
        self._signal: str | None = None
        self.seconds = {"setup": time.perf_counter() - setup_started}

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
        train_started = time.perf_counter()
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
                if self.objective.has_eval() and cfg.eval_every and step % cfg.eval_every == 0 \
                        and step < self.total_steps:
                    eval_metrics = self._evaluate(step, metrics)
                stop = self._stop_requested()
                if stop or (cfg.save_every and step % cfg.save_every == 0) or step == self.total_steps:
                    ckpt.save_training_checkpoint(acc, self.wrapper.save, output, dict(state), cfg.keep_last)
                    last_saved = step
                if stop:
                    break
                started = time.perf_counter()
        bar.close()
        self.seconds["train"] = time.perf_counter() - train_started
        if self._signal is not None:
            logger.warning("stopped by %s at step %d; checkpoint saved — run the same command to resume",
                           self._signal, step)
            if metrics is not None:
                metrics.close()
            return TrainResult(str(output), step, self.total_steps, None, loss, eval_metrics, self._signal,
                               self.seconds)
        if last_saved != step:
            ckpt.save_training_checkpoint(acc, self.wrapper.save, output, dict(state), cfg.keep_last)
        if self.objective.has_eval():
            eval_started = time.perf_counter()
            eval_metrics = self._evaluate(step, metrics)
            self.seconds["eval"] = time.perf_counter() - eval_started
        final = self._export(output / FINAL_DIR)
        if metrics is not None:
            metrics.close()
            plot_loss(output / METRICS_FILE, output / LOSS_PNG)
        return TrainResult(str(output), step, self.total_steps, str(final), loss, eval_metrics, seconds=self.seconds)

    def _optimizer_step(self, micro: list[dict[str, Any]]) -> tuple[float, float | None]:
        """Accumulate gradients over this process's micro-batches, sync once, step. Returns (loss, grad norm)."""
        acc, world, objective = self.accelerator, self.accelerator.num_processes, self.objective
        batches = [objective.prepare(batch, acc.device) for batch in micro]
        local_items = sum(objective.items(batch) for batch in batches)
        items = self._sum(torch.tensor(float(local_items), device=acc.device))  # the global batch's items
        total = torch.zeros((), device=acc.device)
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            with contextlib.nullcontext() if last else acc.no_sync(self.model):
                loss = objective.loss(self.model, batch) / items  # this micro-batch's sum / the global count
                acc.backward(loss * world)  # DDP averages gradients over processes; undo that
            total += loss.detach().float()
        grad_norm = None
        if self.cfg.optim.max_grad_norm is not None:
            grad_norm = float(acc.clip_grad_norm_(self.trainable, self.cfg.optim.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(self._sum(total)), grad_norm

    def _evaluate(self, step: int, metrics: MetricsLog | None) -> dict[str, float]:
        result = self.objective.eval_metrics(self.model, self._sum)
        self.objective.train_mode()
        logger.info("step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in result.items()))
        if metrics is not None:
            metrics.log({"step": step, **result})
        return result

    # Helpers ------------------------------------------------------------------------------------
    def _sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes == 1:
            return tensor
        return self.accelerator.reduce(tensor, reduction="sum")

    def _export(self, directory: Path) -> Path:
        if self.accelerator.is_main_process:
            self.objective.export(directory)
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
