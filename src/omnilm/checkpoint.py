"""Checkpoints: `omnilm.json` + `model.safetensors` (trained weights) + processor files.

A default save stores only what training changed and names each base part by its source; loading
rebuilds the parts from their sources and overlays the stored weights. `full=True` also writes every
base part into the checkpoint (sources become `./llm`, `./vision`, `./audio`) so it stands alone.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from safetensors.torch import load_file, save_file

from omnilm.config import OmniConfig
from omnilm.errors import OmniError
from omnilm.io import atomic_directory
from omnilm.model import OmniModel
from omnilm.processor import OmniProcessor

logger = logging.getLogger(__name__)

CONFIG_FILE = "omnilm.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_METADATA = {"format": "pt", "omnilm": "1"}
OMNI_KIND = "omni"  # what a checkpoint without a `kind` in omnilm.json holds (an OmniConfig records none)


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def checkpoint_kind(path: str | Path) -> str:
    """The `kind` recorded in a checkpoint's omnilm.json: omni, or e.g. dual_encoder."""
    return json.loads((Path(path) / CONFIG_FILE).read_text()).get("kind", OMNI_KIND)


def save_checkpoint(model: OmniModel, processor: OmniProcessor, directory: str | Path, *, full: bool = False) -> Path:
    """Write a checkpoint atomically: an interrupted save leaves any previous checkpoint intact."""
    config = copy.deepcopy(model.config)
    state = model.head_state_dict()

    def parts(staging: Path) -> dict:
        _save_parts(model, processor, config, staging)
        config.trained_parts = []  # the parts now live in subdirectories; keep only heads and adapters here
        return {k: v for k, v in state.items() if not k.startswith(("llm.", "vision.", "audio.")) or "lora_" in k}

    return write_checkpoint(directory, config, state, processor, parts if full else None)


def write_checkpoint(directory: str | Path, config, state: dict, processor,
                     write_parts: Callable[[Path], dict] | None = None, **metadata: str) -> Path:
    """The one checkpoint layout, written atomically: `write_parts(staging)` (a full save) stores the base
    parts and returns the state left for model.safetensors; then the weights, omnilm.json (`config`, whose
    sources `write_parts` may repoint) and the processor's files."""
    directory = Path(directory)
    with atomic_directory(directory) as staging:
        if write_parts is not None:
            state = write_parts(staging)
        state = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
        save_file(state, str(staging / WEIGHTS_FILE), metadata={**WEIGHTS_METADATA, **metadata})
        (staging / CONFIG_FILE).write_text(config.to_json())
        processor.save_pretrained(staging)
    return directory


def load_weights(model, directory: Path, expected: set[str]) -> None:
    """Overlay `directory`'s model.safetensors on `model`; it must hold exactly the `expected` stored weights."""
    weights = directory / WEIGHTS_FILE
    state = load_file(str(weights))
    result = model.load_state_dict(state, strict=False)
    missing = expected - set(state)
    if result.unexpected_keys or missing:
        raise OmniError(f"{weights} does not match the model built from {CONFIG_FILE}: "
                        f"unexpected {sorted(result.unexpected_keys)[:5]}, missing {sorted(missing)[:5]}")


def graft_weights(base: str | Path, donor: str | Path, prefix: str, directory: str | Path) -> Path:
    """A copy of checkpoint `base` in `directory` whose stored weights under `prefix` (e.g. ``connectors.audio.``)
    are `donor`'s: both must store the same tensors (names and shapes) there. Written atomically."""
    base, donor = Path(base), Path(donor)
    state, grafted = load_file(str(base / WEIGHTS_FILE)), load_file(str(donor / WEIGHTS_FILE))
    grafted = {k: v for k, v in grafted.items() if k.startswith(prefix)}
    shapes = {k: tuple(v.shape) for k, v in state.items() if k.startswith(prefix)}
    if not grafted or shapes != {k: tuple(v.shape) for k, v in grafted.items()}:
        raise OmniError(f"{donor / WEIGHTS_FILE} and {base / WEIGHTS_FILE} do not store the same {prefix}* weights "
                        f"({len(grafted)} vs {len(shapes)} tensors): both must be checkpoints of one model")
    with atomic_directory(directory) as staging:
        shutil.copytree(base, staging, dirs_exist_ok=True)
        save_file({**state, **grafted}, str(staging / WEIGHTS_FILE), metadata=WEIGHTS_METADATA)
    return Path(directory)


def _save_parts(model: OmniModel, processor: OmniProcessor, config: OmniConfig, staging: Path) -> None:
    if config.lora is not None:
        raise OmniError("merge the LoRA adapters first (omnilm.lora.merge_lora(model)) before a full save")
    model.llm.save_pretrained(staging / "llm")
    config.llm.source = "./llm"
    save_media_parts(model, processor, config, staging)


def save_media_parts(model: OmniModel, processor: OmniProcessor, config: OmniConfig, staging: Path) -> None:
    """Write the vision tower and Whisper into `staging/vision`, `staging/audio`; repoint `config` at them."""
    if model.vision is not None:
        model.vision.tower.save_pretrained(staging / "vision")
        config.vision.source = "./vision"
    transcriber = processor.transcriber
    if transcriber is not None:  # transcribe mode loads all three from the audio source
        for part in (transcriber.whisper, transcriber.feature_extractor, transcriber.tokenizer):
            part.save_pretrained(staging / "audio")
    elif model.audio is not None:  # embed mode keeps only the encoder: store it under Whisper's key names
        part = staging / "audio"
        model.audio.encoder.config.save_pretrained(part)
        encoder_state = {f"model.encoder.{k}": v.contiguous() for k, v in model.audio.encoder.state_dict().items()}
        save_file(encoder_state, str(part / WEIGHTS_FILE), metadata={"format": "pt"})
    if config.audio is not None:
        config.audio.source = "./audio"  # Whisper's feature extractor travels in the processor files


def load_checkpoint(directory: str | Path) -> tuple[OmniModel, OmniProcessor]:
    """Rebuild the base parts from their sources, then overlay the checkpoint's weights."""
    directory = Path(directory)
    if not is_checkpoint(directory):
        raise OmniError(f"{directory} is not an omnilm checkpoint: {CONFIG_FILE} is missing")
    config = OmniConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
    processor = OmniProcessor.from_pretrained(directory, config)
    lora = config.lora
    config.lora = None
    model = OmniModel.from_config(
        config, layout=processor.layout, placeholder_ids=processor.placeholder_ids, base_dir=directory
    )
    if lora is not None:
        from omnilm.lora import attach_lora

        attach_lora(model, lora)
    if (directory / WEIGHTS_FILE).is_file():
        load_weights(model, directory, set(model.head_state_dict()))
    return model, processor
