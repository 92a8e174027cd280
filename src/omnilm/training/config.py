"""TrainConfig: one training run (any stage) as nested dataclasses, read from YAML with `--set` overrides.

The model's kind (`model.config`'s or the checkpoint's `kind`) picks the objective: an OmniConfig (no
kind) trains on chat records with the token loss; `kind: dual_encoder` trains a CLIP-style dual encoder
contrastively on image–caption pairs. A stage is settings: each part (`vision`, `audio`, `connectors`,
optionally one connector, `llm`; a dual encoder's `vision`, `text`, `connectors` = its projection heads)
is `frozen | full | lora | qlora` with its own learning rate and weight decay. Every field is checked on
construction and errors name the field (`stage.llm.mode: ...`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from omnilm.checkpoint import CONFIG_FILE, OMNI_KIND, checkpoint_kind, is_checkpoint
from omnilm.config import MODALITIES, OmniConfig
from omnilm.configkit import apply_overrides, check_fields, coerce, read_mapping, require
from omnilm.data.mixture import CHECKS
from omnilm.data.sources import ON_ERROR, SourceSpec
from omnilm.dual.config import KIND as DUAL_KIND
from omnilm.dual.config import DualEncoderConfig
from omnilm.errors import ConfigError

PART_MODES = ("frozen", "full", "lora", "qlora")
SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("auto", "no", "bf16", "fp16")
LOSS_TYPES = ("cross_entropy", "distill")
LOSS_AVERAGES = ("token", "record")


@dataclass
class ModelSection:
    """Where the model comes from: exactly one of `config`, `checkpoint`, `tiny`."""

    config: str | dict[str, Any] | None = None  # OmniConfig or DualEncoderConfig (file or mapping): fresh heads
    checkpoint: str | None = None  # an omnilm checkpoint (dir or pkg:/hub ref) to continue from, e.g. stage 1
    tiny: list[str] | None = None  # modalities of omnilm.testing.tiny_model (tests and examples)
    tiny_connector: str = "mlp"  # connector type of the tiny model

    def validate(self, path: str = "model") -> None:
        given = [name for name in ("config", "checkpoint", "tiny") if getattr(self, name)]
        require(len(given) == 1, path, f"set exactly one of config, checkpoint, tiny (got {given or 'none'})")
        if self.tiny is not None:
            bad = [m for m in self.tiny if m not in MODALITIES]
            require(not bad, f"{path}.tiny", f"unknown modalities {bad}; choose from {MODALITIES}")

    @property
    def kind(self) -> str:
        """omni (an OmniConfig records no kind) or dual_encoder, from the config or the checkpoint."""
        if self.tiny:
            return OMNI_KIND
        if self.checkpoint:
            from omnilm.sources import resolve_source

            directory = resolve_source(self.checkpoint)
            if not is_checkpoint(directory):
                raise ConfigError(f"model.checkpoint: {self.checkpoint} is not an omnilm checkpoint "
                                  f"({CONFIG_FILE} is missing)")
            return checkpoint_kind(directory)
        data = self.config_mapping()
        return data.get("kind", OMNI_KIND) if isinstance(data, dict) else OMNI_KIND

    def config_mapping(self) -> Any:
        """`config` as read from its file (None when there is no such file: it fails when the model is built)."""
        if self.config is None or isinstance(self.config, dict):
            return self.config
        path = Path(self.config)
        return yaml.safe_load(path.read_text()) if path.is_file() else None


@dataclass
class DataSection:
    # Sources (omnilm.data.sources): a LLaVA JSON array or JSONL path, or mappings {path | hub, columns,
    # weight, ...} for parquet / `datasets` dirs / hub ids / WebDataset tars; several make a weighted
    # mixture. For a dual encoder: caption JSONL ({"image", "caption"}) or easy-vqa:train / easy-vqa:test
    train: str | SourceSpec | list[str | SourceSpec] = ""
    eval: str | SourceSpec | list[str | SourceSpec] | None = None  # held-out records: eval loss or Recall@K
    media_root: str | None = None  # media paths are relative to this (default: each JSONL file's folder)
    streaming: bool = False  # read JSONL records lazily through a datasets.IterableDataset (needs optim.max_steps)
    shuffle: bool = True  # a fresh seeded order each epoch
    shuffle_buffer: int = 1000  # streaming only: examples held for approximate shuffling
    max_eval_samples: int | None = 256  # cap on eval records (eval runs every `eval_every` steps)
    num_workers: int = 0  # DataLoader workers decoding media and collating (streaming data collates in-process)
    check: str = "auto"  # records validated before training: full | sample | auto (full up to 50k records)
    check_sample: int = 2000  # records per source validated up front when sampling
    on_error: str = "stop"  # a bad record or shard found while training: stop (naming it) | skip (and report)

    @property
    def train_files(self) -> list:
        return [self.train] if isinstance(self.train, (str, SourceSpec)) else list(self.train)

    @property
    def eval_files(self) -> list:
        if not self.eval:
            return []
        return [self.eval] if isinstance(self.eval, (str, SourceSpec)) else list(self.eval)

    def validate(self, path: str = "data") -> None:
        require(bool(self.train_files) and all(self.train_files), f"{path}.train", "name at least one source")
        for name, specs in (("train", self.train_files), ("eval", self.eval_files)):
            for i, spec in enumerate(specs):
                if isinstance(spec, SourceSpec):
                    spec.validate(f"{path}.{name}[{i}]")
        require(self.shuffle_buffer >= 1, f"{path}.shuffle_buffer", "must be >= 1")
        require(self.num_workers >= 0, f"{path}.num_workers", "must be >= 0")
        require(self.max_eval_samples is None or self.max_eval_samples > 0, f"{path}.max_eval_samples", "must be > 0")
        require(self.check in CHECKS, f"{path}.check", f"{self.check!r} is not one of {CHECKS}")
        require(self.check_sample >= 1, f"{path}.check_sample", "must be >= 1")
        require(self.on_error in ON_ERROR, f"{path}.on_error", f"{self.on_error!r} is not one of {ON_ERROR}")
        require(not self.streaming or all(isinstance(f, str) for f in self.train_files), f"{path}.streaming",
                "streams JSONL paths only; indexed sources (mappings) need no streaming")


@dataclass
class PartStage:
    mode: str = "frozen"  # frozen | full | lora | qlora (lora/qlora: the LLM only)
    lr: float | None = None  # None: optim.lr
    weight_decay: float = 0.0  # AdamW decay on matrices (never on biases and norms)

    def validate(self, path: str, modes: tuple[str, ...] = PART_MODES) -> None:
        require(self.mode in modes, f"{path}.mode", f"{self.mode!r} is not one of {modes}")
        require(self.lr is None or self.lr >= 0, f"{path}.lr", "must be >= 0")
        require(self.weight_decay >= 0, f"{path}.weight_decay", "must be >= 0")


@dataclass
class LoraSection:
    r: int = 16  # adapter rank
    alpha: int = 32  # scale = alpha / r
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"  # PEFT names, e.g. [q_proj, v_proj]

    def validate(self, path: str = "stage.lora") -> None:
        require(self.r >= 1, f"{path}.r", "must be >= 1")
        require(0 <= self.dropout < 1, f"{path}.dropout", "must be in [0, 1)")
        require(bool(self.target_modules), f"{path}.target_modules", "name modules or use 'all-linear'")

    def peft_settings(self) -> dict[str, Any]:
        return {"r": self.r, "lora_alpha": self.alpha, "lora_dropout": self.dropout,
                "target_modules": self.target_modules}


@dataclass
class LossSection:
    """The token objective. `cross_entropy`: on the assistant tokens. `distill` (Ultravox's recipe): on a spoken
    record (one built by `omnilm data spoken`, which keeps the words in `spoken_text`), the KL divergence from
    the model's next-token distribution given the question as text (the teacher, no gradient) to the same
    model's given the audio, at `temperature`, plus `ce_weight` × cross-entropy; other records: cross-entropy.
    `average`: `token`, the mean over every assistant token of the global batch; `record`, each record's mean
    over its own tokens, then the mean over records (a long answer then weighs as much as a one-word one)."""

    type: str = "cross_entropy"  # cross_entropy | distill
    temperature: float = 1.0  # softens both distributions (distill)
    ce_weight: float = 0.0  # distill: weight of the cross-entropy on spoken records
    average: str = "token"  # token | record (cross_entropy)

    def validate(self, path: str = "stage.loss") -> None:
        require(self.type in LOSS_TYPES, f"{path}.type", f"{self.type!r} is not one of {LOSS_TYPES}")
        require(self.temperature > 0, f"{path}.temperature", "must be > 0")
        require(self.ce_weight >= 0, f"{path}.ce_weight", "must be >= 0")
        require(self.average in LOSS_AVERAGES, f"{path}.average", f"{self.average!r} is not one of {LOSS_AVERAGES}")
        require(self.average == "token" or self.type == "cross_entropy", f"{path}.average",
                "record averages cross-entropy only; use average: token with distill")


@dataclass
class StageSection:
    """Stage 1 (align): connectors only. Stage 2 (instruct): connectors + LoRA on the LLM."""

    name: str = "align"
    vision: PartStage = field(default_factory=PartStage)
    audio: PartStage = field(default_factory=PartStage)
    connectors: PartStage = field(default_factory=lambda: PartStage(mode="full"))
    per_connector: dict[str, Any] = field(default_factory=dict)  # modality → what differs from `connectors` (merged)
    llm: PartStage = field(default_factory=PartStage)
    text: PartStage = field(default_factory=PartStage)  # a dual encoder's text tower (LiT trains it: full)
    lora: LoraSection = field(default_factory=LoraSection)
    loss: LossSection = field(default_factory=LossSection)

    def __post_init__(self) -> None:
        check_fields(self, "stage")
        base = dataclasses.asdict(self.connectors)  # an override names only what differs from `connectors`
        self.per_connector = {
            k: coerce(PartStage, {**base, **v} if isinstance(v, dict) else v, f"stage.per_connector.{k}")
            for k, v in self.per_connector.items()
        }

    def validate(self, path: str = "stage") -> None:
        self.vision.validate(f"{path}.vision", ("frozen", "full"))
        self.audio.validate(f"{path}.audio", ("frozen", "full"))
        self.connectors.validate(f"{path}.connectors", ("frozen", "full"))
        for key, part in self.per_connector.items():
            require(key in MODALITIES, f"{path}.per_connector.{key}", f"unknown modality; choose from {MODALITIES}")
            part.validate(f"{path}.per_connector.{key}", ("frozen", "full"))
        self.llm.validate(f"{path}.llm")
        self.text.validate(f"{path}.text", ("frozen", "full"))
        self.lora.validate(f"{path}.lora")
        self.loss.validate(f"{path}.loss")

    def connector(self, key: str) -> PartStage:
        return self.per_connector.get(key, self.connectors)


@dataclass
class OptimSection:
    lr: float = 1e-3  # default learning rate of every trained part
    batch_size: int = 8  # per process; global batch = batch_size × processes × grad_accum
    grad_accum: int = 1  # micro-batches per optimizer step
    epochs: float = 1.0  # passes over the training data (ignored when max_steps is set)
    max_steps: int | None = None  # optimizer steps; overrides epochs
    warmup_steps: int | None = None  # linear warmup; None: warmup_ratio × total steps
    warmup_ratio: float = 0.03
    schedule: str = "cosine"  # cosine | linear | constant (after warmup)
    max_grad_norm: float | None = 1.0  # clip the global gradient norm; None: no clipping
    betas: tuple[float, float] = (0.9, 0.999)
    mixed_precision: str = "auto"  # auto: bf16 on GPUs that support it, else fp32 · no | bf16 | fp16
    gradient_checkpointing: bool = False  # recompute LLM activations in backward: less memory, ~30% slower

    def validate(self, path: str = "optim") -> None:
        require(self.lr > 0, f"{path}.lr", "must be > 0")
        require(self.batch_size >= 1, f"{path}.batch_size", "must be >= 1")
        require(self.grad_accum >= 1, f"{path}.grad_accum", "must be >= 1")
        require(self.epochs > 0, f"{path}.epochs", "must be > 0")
        require(self.max_steps is None or self.max_steps >= 1, f"{path}.max_steps", "must be >= 1")
        require(self.warmup_steps is None or self.warmup_steps >= 0, f"{path}.warmup_steps", "must be >= 0")
        require(0 <= self.warmup_ratio < 1, f"{path}.warmup_ratio", "must be in [0, 1)")
        require(self.schedule in SCHEDULES, f"{path}.schedule", f"{self.schedule!r} is not one of {SCHEDULES}")
        require(self.max_grad_norm is None or self.max_grad_norm > 0, f"{path}.max_grad_norm", "must be > 0")
        require(len(self.betas) == 2, f"{path}.betas", "must be two numbers")
        require(self.mixed_precision in PRECISIONS, f"{path}.mixed_precision",
                 f"{self.mixed_precision!r} is not one of {PRECISIONS}")


@dataclass
class FeatureCacheSection:
    enabled: bool = True  # encode each media item once per frozen encoder; reuse across epochs and runs
    dir: str | None = None  # default: $OMNILM_CACHE/features

    def validate(self, path: str = "feature_cache") -> None:
        pass


@dataclass
class ExportSection:
    merge_lora: bool = False  # fold LoRA adapters into the LLM in the final model (stores the whole LLM)
    full: bool = False  # write every base part into the final model (a standalone checkpoint)

    def validate(self, path: str = "export") -> None:
        pass


@dataclass
class TrainConfig:
    model: ModelSection
    data: DataSection
    output_dir: str = "runs/train"  # checkpoints/, final/, metrics.jsonl, loss.png
    stage: StageSection = field(default_factory=StageSection)
    optim: OptimSection = field(default_factory=OptimSection)
    feature_cache: FeatureCacheSection = field(default_factory=FeatureCacheSection)
    export: ExportSection = field(default_factory=ExportSection)
    seed: int = 0  # data order, fresh weights, dropout
    log_every: int = 1  # optimizer steps between metric lines
    eval_every: int | None = None  # steps between eval-loss passes (and one at the end); None: only at the end
    save_every: int | None = 100  # steps between resumable checkpoints; None: only on exit
    keep_last: int = 2  # resumable checkpoints kept (oldest pruned)
    resume: str = "auto"  # auto: continue from the newest checkpoint in output_dir · never · or a checkpoint dir

    def __post_init__(self) -> None:
        check_fields(self)
        self.validate()

    def validate(self) -> None:
        self.model.validate()
        self.data.validate()
        self.stage.validate()
        self.optim.validate()
        require(bool(self.output_dir), "output_dir", "must name a directory")
        for name in ("log_every", "eval_every", "save_every"):
            value = getattr(self, name)
            require(value is None or value >= 1, name, "must be >= 1")
        require(self.keep_last >= 1, "keep_last", "must be >= 1")
        require(not self.data.streaming or self.optim.max_steps is not None, "optim.max_steps",
                 "streaming data has no known length: set optim.max_steps")
        if not self.model.checkpoint:  # a checkpoint's kind is read when training starts (it may need a download)
            self.check_kind(self.model.kind)

    def check_kind(self, kind: str) -> None:
        """Refuse settings that mean nothing for this kind of model, naming the field."""
        require(kind in (OMNI_KIND, DUAL_KIND), "model", f"unknown model kind {kind!r}; omnilm trains "
                 f"{OMNI_KIND} (an OmniConfig) and {DUAL_KIND} models")
        if isinstance(self.model.config, dict):  # errors name the model config's field
            (DualEncoderConfig if kind == DUAL_KIND else OmniConfig).from_dict(self.model.config)
        if kind != DUAL_KIND:
            require(self.stage.text.mode == "frozen", "stage.text.mode", "only a dual encoder has a text tower to train")
            require(self.stage.loss.type != "distill" or not self.data.streaming, "data.streaming",
                    "distillation reads each spoken record's text beside its audio; use streaming: false")
            return
        require(self.stage.loss.type == "cross_entropy", "stage.loss.type",
                "a dual encoder trains contrastively; the token losses are for chat models")
        for name in ("llm", "audio"):
            require(getattr(self.stage, name).mode == "frozen", f"stage.{name}.mode",
                     f"a dual encoder has no {name}; its parts are vision, text and connectors (the heads)")
        require(self.stage.connectors.mode == "full", "stage.connectors.mode",
                 "a dual encoder's projection heads and temperature (its connectors) are always trained")
        require(not self.stage.per_connector, "stage.per_connector", "a dual encoder has one pair of heads")
        require(self.optim.batch_size >= 2, "optim.batch_size", "contrastive training needs >= 2 pairs per batch")
        require(not self.data.streaming, "data.streaming", "caption pairs are read in full; use streaming: false")
        require(all(isinstance(f, str) for f in self.data.train_files + self.data.eval_files), "data.train",
                "a dual encoder reads caption JSONL files or easy-vqa:SPLIT, not source mappings")
        require(not self.optim.gradient_checkpointing, "optim.gradient_checkpointing", "is for LLMs; set it false")
        require(not self.export.merge_lora, "export.merge_lora", "a dual encoder has no LoRA adapters")

    # Files and overrides ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        data = self.to_dict()
        data["optim"]["betas"] = list(data["optim"]["betas"])
        return yaml.safe_dump(data, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return coerce(cls, data, "")

    @classmethod
    def from_file(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        """Read YAML (or JSON), then apply `a.b=c` overrides. Relative paths are relative to the working dir."""
        return cls.from_dict(apply_overrides(read_mapping(path, "training config"), overrides or []))

