"""The reverse of `--to hf-llava`: a Llava checkpoint (local directory or hub id) as an omnilm model.

The Llava is converted once into an omnilm checkpoint under `$OMNILM_CACHE/llava/<key>`: the language model as
a causal-LM directory (with the Llava's tokenizer and chat template), the vision tower as its own directory
(with the image processor), and the projector as omnilm's `mlp` connector. omnilm's training stages then treat
it like any model they assembled: frozen tower, trainable connector, LoRA or full LLM.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import save_file

from omnilm.checkpoint import CONFIG_FILE, WEIGHTS_FILE, WEIGHTS_METADATA
from omnilm.encoders.vision import prefix_token_count
from omnilm.errors import OmniError
from omnilm.export.chat_template import text_template
from omnilm.io import atomic_directory
from omnilm.paths import cache_dir

logger = logging.getLogger(__name__)

LLAVA_TYPE = "llava"
HUB_FILES = ["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt"]


def llava_directory(source: str) -> str | None:
    """`source` as a local Llava directory (downloading a hub snapshot whose config says llava), or None."""
    path = Path(source)
    if path.is_dir():
        return source if _model_type(path / "config.json") == LLAVA_TYPE else None
    if path.exists() or source.count("/") != 1:
        return None
    try:
        from huggingface_hub import hf_hub_download, snapshot_download

        if _model_type(Path(hf_hub_download(source, "config.json"))) != LLAVA_TYPE:
            return None
        return snapshot_download(source, allow_patterns=HUB_FILES)
    except Exception:  # offline, or no such repo: not a Llava we can reach
        return None


def load_llava(directory: str | Path):
    """An OmniLM equal to the Llava in `directory` (converted on first use, then read from the cache)."""
    from omnilm.lm import OmniLM

    target = cache_dir("llava", _key(Path(directory)))
    if not (target / CONFIG_FILE).is_file():
        convert(directory, target)
    return OmniLM.from_pretrained(target)


def convert(directory: str | Path, out: str | Path) -> Path:
    """Write the omnilm checkpoint of the Llava in `directory` to `out` (atomically)."""
    import transformers

    directory, out = Path(directory), Path(out)
    config = transformers.AutoConfig.from_pretrained(directory)
    problems = _problems(config)
    if problems:
        raise OmniError(f"{directory} cannot be loaded as an omnilm model:\n" + "\n".join(f"  - {p}" for p in problems))
    llava = transformers.LlavaForConditionalGeneration.from_pretrained(directory, dtype="auto").eval()
    processor = transformers.AutoProcessor.from_pretrained(directory)
    with atomic_directory(out) as staging:
        _write_parts(llava, processor, staging)
        projector = copy.deepcopy(llava.model.multi_modal_projector)  # small: the Llava is freed before the parts
        dtypes = (llava.dtype, llava.model.vision_tower.dtype)     # load again as omnilm's
        del llava
        lm = _assemble(projector, dtypes, processor, config, staging, final=out)
        state = {k: v.detach().contiguous() for k, v in lm.model.head_state_dict().items()}
        save_file(state, str(staging / WEIGHTS_FILE), metadata=WEIGHTS_METADATA)
        (staging / CONFIG_FILE).write_text(lm.config.to_json())
        lm.processor.save_pretrained(staging)
    logger.info("converted the Llava in %s to an omnilm checkpoint in %s", directory, out)
    return out


def _problems(config) -> list[str]:
    problems = []
    layer, strategy = config.vision_feature_layer, config.vision_feature_select_strategy
    if not isinstance(layer, int):
        problems.append(f"vision_feature_layer {layer}: omnilm takes one layer's hidden state, not a concatenation")
    if config.projector_hidden_act != "gelu":
        problems.append(f"projector_hidden_act {config.projector_hidden_act!r}: omnilm's mlp connector is "
                        "Linear-GELU-Linear")
    prefix = prefix_token_count(config.vision_config)
    if strategy == "default" and prefix != 1:
        problems.append(f"vision_feature_select_strategy 'default' on a {config.vision_config.model_type} tower with "
                        f"{prefix} prefix tokens: Llava drops exactly one token, omnilm drops all of them or none")
    return problems


def _write_parts(llava, processor, staging: Path) -> None:
    """llm/ (causal LM + tokenizer) and vision/ (tower + image processor) from the Llava's modules."""
    import transformers

    from omnilm.export.weights import load_into_meta

    text_config = llava.config.text_config
    state = {}
    for key, tensor in llava.state_dict().items():
        if key.startswith("model.language_model."):
            state[key.replace("model.language_model.", "model.", 1)] = tensor
        elif key.startswith("lm_head."):
            state[key] = tensor
    llm = load_into_meta(lambda: transformers.AutoModelForCausalLM.from_config(text_config), state)
    llm.generation_config = llava.generation_config
    llm.save_pretrained(staging / "llm")
    tokenizer = processor.tokenizer
    if getattr(processor, "chat_template", None):  # a processor's template takes content parts; omnilm sends text
        tokenizer.chat_template = text_template(processor.chat_template, processor.image_token)
    tokenizer.save_pretrained(staging / "llm")
    llava.model.vision_tower.save_pretrained(staging / "vision")
    processor.image_processor.save_pretrained(staging / "vision")


def _assemble(projector, dtypes, processor, config, staging: Path, *, final: Path):
    """The OmniLM over the written parts, with the Llava's projector as its connector; `dtypes`: the LM's, the
    tower's."""
    from omnilm.config import ConnectorConfig, LLMConfig, OmniConfig, PlaceholderConfig, VisionConfig, dtype_name
    from omnilm.lm import OmniLM

    strategy = config.vision_feature_select_strategy
    omni = OmniConfig(
        llm=LLMConfig(source=str(staging / "llm"), dtype=dtype_name(dtypes[0])),
        vision=VisionConfig(source=str(staging / "vision"), feature_layer=config.vision_feature_layer,
                            drop_cls=strategy == "default", dtype=dtype_name(dtypes[1])),
        connectors={"image": ConnectorConfig(type="mlp")},
        placeholders=PlaceholderConfig(image=processor.image_token),
    )
    lm = OmniLM.from_config(omni, name=str(final))
    if lm.processor.placeholder_ids["image"] != config.image_token_index:
        raise OmniError(f"the tokenizer gives {processor.image_token!r} the id {lm.processor.placeholder_ids['image']}"
                        f" but the Llava config says image_token_index {config.image_token_index}")
    net = lm.model.connectors["image"].net
    with torch.no_grad():
        for theirs, ours in ((projector.linear_1, net[0]), (projector.linear_2, net[2])):
            ours.weight.copy_(theirs.weight)
            ours.bias.copy_(theirs.bias if theirs.bias is not None else torch.zeros_like(ours.bias))
    for part in (lm.config.llm, lm.config.vision):  # the checkpoint names its parts where they will live
        part.source = str(final / Path(part.source).name)
    return lm


def _model_type(config_file: Path) -> str | None:
    try:
        return json.loads(config_file.read_text()).get("model_type")
    except (OSError, ValueError):
        return None


def _key(directory: Path) -> str:
    """Changes when the Llava's files do: its resolved path and each file's name, size and mtime."""
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in directory.resolve().iterdir() if p.is_file())
    return hashlib.sha256(json.dumps([str(directory.resolve()), files]).encode()).hexdigest()[:16]
