"""Resumable training checkpoints: atomic, the newest K kept, exact resume.

`OUTPUT/checkpoints/step-00000100/` holds Accelerate's state (trainable weights only, optimizer,
scheduler, every process's RNG), `model/` (an omnilm checkpoint, loadable with `omnilm.load`) and
`trainer_state.json` (step, epoch, data position) written last. A checkpoint is written under a
hidden name and renamed into place, so a kill at any moment leaves the previous one intact.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from omnilm.errors import OmniError

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
MODEL_DIR = "model"
_NAME = re.compile(r"^step-(\d{8})$")


def checkpoints_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def register_hooks(accelerator) -> None:
    """Store only trainable weights, under the unwrapped model's names (so any process count can resume)."""

    def save(models: list, weights: list[dict], output_dir: str) -> None:
        for i, model in enumerate(models):
            names = _trainable_names(accelerator.unwrap_model(model))
            state = {_unwrapped_name(k): v for k, v in weights[i].items()}
            weights[i] = {k: v for k, v in state.items() if k in names}

    def load(models: list, input_dir: str) -> None:
        for i, model in enumerate(models):
            model = accelerator.unwrap_model(model)
            path = Path(input_dir) / ("model.safetensors" if i == 0 else f"model_{i}.safetensors")
            state = load_file(str(path), device=str(accelerator.device))
            expected = _trainable_names(model)
            if set(state) != expected:
                raise OmniError(
                    f"{input_dir} was written for different trainable weights (another stage or model): missing "
                    f"{sorted(expected - set(state))[:3]}, unexpected {sorted(set(state) - expected)[:3]}; "
                    "use another output_dir, or resume: never"
                )
            model.load_state_dict(state, strict=False)
        models.clear()  # loaded here; Accelerate skips them

    accelerator.register_save_state_pre_hook(save)
    accelerator.register_load_state_pre_hook(load)


def _trainable_names(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def _unwrapped_name(name: str) -> str:
    return name.removeprefix("module.")  # DDP's wrapper prefix


def save_training_checkpoint(accelerator, save_model: Callable[[Path], Any], output_dir: str | Path,
                             state: dict[str, Any], keep_last: int) -> Path:
    """Write checkpoint `step-{state['step']}` from every process, then prune to the newest `keep_last`.

    `save_model(directory)` writes the model as a loadable checkpoint (the wrapper's `save`)."""
    root = checkpoints_root(output_dir)
    final = root / f"step-{state['step']:08d}"
    staging = root / f".{final.name}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    if accelerator.is_main_process:
        save_model(staging / MODEL_DIR)
        (staging / STATE_FILE).write_text(json.dumps(state, indent=2))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():  # the same step saved again (a signal right after a periodic save)
            shutil.rmtree(final)
        os.replace(staging, final)
        for old in list_checkpoints(output_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def read_state(path: str | Path) -> dict[str, Any]:
    """The trainer state (step, epoch, data position, global batch) of checkpoint `path`."""
    state_file = Path(path) / STATE_FILE
    if not state_file.is_file():
        raise OmniError(f"{path} is not a complete training checkpoint ({STATE_FILE} is missing)")
    return json.loads(state_file.read_text())


def load_training_checkpoint(accelerator, path: str | Path) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG from `path`; returns its trainer state."""
    state = read_state(path)
    accelerator.load_state(str(path))
    return state
