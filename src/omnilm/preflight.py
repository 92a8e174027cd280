"""Check a config before anything is downloaded: every part exists and is of the right kind, widths agree.

What a part is comes from what is already on this machine (a local directory, a converted `pkg:`
entry, the Hugging Face cache) or from a table of well-known hub parts; a hub id known to none of them
can only be checked once downloaded, and the report says so. Connectors and fusion blocks are built
on the meta device (no memory, no weights) so that their own width checks run too.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from omnilm.config import OmniConfig
from omnilm.errors import ConfigError, OmniError

logger = logging.getLogger(__name__)

KINDS = {"llm": "a causal LLM", "vision": "a vision model", "audio": "a Whisper model"}
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


@dataclass(frozen=True)
class PartInfo:
    kind: str  # llm | vision | audio | text
    width: int | None = None  # hidden size (d_model)
    layers: int | None = None  # decoder layers of an LLM
    patch_size: int | None = None  # vision
    image_size: int | None = None  # vision
    origin: str = "table"  # where this was learnt: table | config | registry


# The parts the recipes name, and a few more; widths from each model's config.json.
KNOWN_PARTS: dict[str, PartInfo] = {
    "lmsys/vicuna-7b-v1.5": PartInfo("llm", 4096, 32),
    "meta-llama/Llama-2-7b-chat-hf": PartInfo("llm", 4096, 32),
    "facebook/opt-2.7b": PartInfo("llm", 2560, 32),
    "togethercomputer/RedPajama-INCITE-Base-3B-v1": PartInfo("llm", 2560, 32),
    "microsoft/phi-2": PartInfo("llm", 2560, 32),
    "Qwen/Qwen2.5-0.5B-Instruct": PartInfo("llm", 896, 24),
    "HuggingFaceTB/SmolLM2-135M-Instruct": PartInfo("llm", 576, 30),
    "openai/clip-vit-large-patch14-336": PartInfo("vision", 1024, patch_size=14, image_size=336),
    "openai/clip-vit-large-patch14": PartInfo("vision", 1024, patch_size=14, image_size=224),
    "openai/clip-vit-base-patch32": PartInfo("vision", 768, patch_size=32, image_size=224),
    "google/siglip-so400m-patch14-384": PartInfo("vision", 1152, patch_size=14, image_size=384),
    "Salesforce/blip2-opt-2.7b": PartInfo("vision", 1408, patch_size=14, image_size=224),  # its EVA ViT-g tower
    "openai/whisper-small": PartInfo("audio", 768),
    "openai/whisper-base": PartInfo("audio", 512),
}


def preflight(cfg: OmniConfig, base_dir: str | Path | None = None) -> list[str]:
    """One line per part and connector saying what was checked; a ConfigError lists every problem."""
    problems: list[str] = []
    lines: list[str] = []
    infos: dict[str, PartInfo | None] = {}
    for name in ("llm", "vision", "audio"):
        part = getattr(cfg, name)
        if part is None:
            continue
        try:
            info = infos[name] = part_info(part.source, base_dir)
        except OmniError as err:
            problems.append(f"{name}.source: {err}")
            continue
        if info is None:
            lines.append(f"{name}: {part.source} (not on this machine and not in omnilm's table: checked on download)")
            continue
        expected = "audio" if name == "audio" else name
        if info.kind != expected:
            what = KINDS.get(info.kind, info.kind)
            problems.append(f"{name}.source: {part.source!r} is {what}, not {KINDS[expected]}")
            continue
        lines.append(f"{name}: {part.source} (width {info.width}, from {info.origin})")
    if not problems:
        problems += _check_widths(cfg, infos, lines)
    if problems:
        raise ConfigError("the config cannot be built:\n  - " + "\n  - ".join(problems))
    return lines


def part_info(source: str, base_dir: str | Path | None = None) -> PartInfo | None:
    """What `source` is, learnt without downloading; None when that needs a download."""
    if source.startswith("pkg:"):
        from omnilm.packaged import cache_dir, get_spec, is_cached

        spec = get_spec(source)  # an unknown name lists the valid references
        if is_cached(source):
            return _from_config(cache_dir() / spec.name, "cached pkg: entry")
        return PartInfo(spec.kind, origin="registry")
    path = Path(base_dir or ".") / source if source.startswith(("./", "../")) else Path(source).expanduser()
    if path.is_dir():
        return _from_config(path, "local config.json")
    if source.startswith(("/", "./", "../", "~")) or not _HUB_ID.match(source):
        raise ConfigError(f"{source!r} is neither an existing directory, a pkg: reference nor a hub id")
    cached = _hub_cache(source)
    if cached is not None:
        return _from_config(cached, "Hugging Face cache")
    return KNOWN_PARTS.get(source)


def _hub_cache(repo_id: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def _from_config(directory: Path, origin: str) -> PartInfo:
    import transformers

    from omnilm.encoders.vision import vision_tower_config

    try:
        config = transformers.AutoConfig.from_pretrained(directory)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{directory} holds no readable config.json: {err}") from None
    if config.model_type == "whisper":
        return PartInfo("audio", config.d_model, origin=origin)
    tower = vision_tower_config(config)
    if getattr(tower, "patch_size", None) is not None:
        return PartInfo(
            "vision", tower.hidden_size, patch_size=tower.patch_size, image_size=tower.image_size, origin=origin
        )
    if config.model_type in transformers.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        text = config.get_text_config()
        return PartInfo("llm", text.hidden_size, text.num_hidden_layers, origin=origin)
    return PartInfo(config.model_type, getattr(config, "hidden_size", None), origin=origin)


def _check_widths(cfg: OmniConfig, infos: dict[str, PartInfo | None], lines: list[str]) -> list[str]:
    """Build each connector (and the fusion blocks) on the meta device at the known widths."""
    from omnilm.connectors import build_connector
    from omnilm.encoders.vision import pooled_grid

    problems = []
    llm, vision, audio = infos.get("llm"), infos.get("vision"), infos.get("audio")
    in_dims: dict[str, int | None] = {"image": None, "video": None, "audio": None}
    if vision is not None and vision.width:
        shuffle = cfg.vision.pooling == "pixel_shuffle"
        in_dims["image"] = in_dims["video"] = vision.width * (cfg.vision.pool_size**2 if shuffle else 1)
        if vision.patch_size:
            try:
                side = cfg.vision.image_size or vision.image_size
                pooled_grid(side // vision.patch_size, cfg.vision.pooling, cfg.vision.pool_size)
            except ConfigError as err:
                problems.append(str(err))
    if audio is not None and audio.width:
        in_dims["audio"] = audio.width * cfg.audio.stack_factor
    out_dim = llm.width if llm is not None else None
    for key, connector in cfg.connectors.items():
        if in_dims[key] is None or out_dim is None:
            lines.append(f"connectors.{key}: {connector.type} (widths unknown until download)")
            continue
        try:
            with torch.device("meta"):
                build_connector(
                    connector.type, in_dim=in_dims[key], out_dim=out_dim, hidden_dim=connector.hidden_dim,
                    **connector.options,
                )
        except (ConfigError, TypeError, ValueError, RuntimeError) as err:
            problems.append(f"connectors.{key}: {connector.type} from width {in_dims[key]} to {out_dim}: {err}")
            continue
        lines.append(f"connectors.{key}: {connector.type} {in_dims[key]} → {out_dim}")
    if cfg.fusion.mode == "gated_xattn" and out_dim is not None:
        if out_dim % cfg.fusion.heads:
            problems.append(f"fusion.heads: {cfg.fusion.heads} heads do not divide the LLM width {out_dim}")
        elif llm.layers:
            blocks = len(range(0, llm.layers, cfg.fusion.every))
            lines.append(f"fusion: gated_xattn, {blocks} blocks in {llm.layers} decoder layers")
    return problems
