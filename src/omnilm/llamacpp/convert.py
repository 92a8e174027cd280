"""A transformers LLM directory → GGUF with llama.cpp's own converter, then llama.cpp's quantizer.

The converter (`convert_hf_to_gguf.py` with its `conversion/` and `gguf-py/`) ships in llama-cpp-python's
source distribution, not in its wheel; it is taken once from that sdist (pip's cache holds it after a source
install) into `$OMNILM_CACHE/llama.cpp/converter-VERSION` and run in a subprocess, so its `gguf-py` never
meets the `gguf` package imported here. Quantization is `llama_model_quantize` of the installed library.
"""

from __future__ import annotations

import ctypes
import logging
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from omnilm.errors import OmniError
from omnilm.io import atomic_directory
from omnilm.paths import cache_dir

logger = logging.getLogger(__name__)

FLOAT_TYPES = {"F32": "f32", "F16": "f16", "BF16": "bf16"}  # written by the converter itself
QUANT_TYPES = ("Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S", "Q4_0", "Q3_K_M", "Q2_K")  # need no imatrix
QUANTS = (*FLOAT_TYPES, *QUANT_TYPES)
_CONVERTER_PARTS = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")
_RUNNER = Path(__file__).with_name("converter_main.py")


def check_quant(quant: str) -> str:
    """The canonical name of `quant`, or a clear error listing the ones omnilm exports."""
    name = quant.upper()
    if name not in QUANTS:
        raise OmniError(f"unknown quantization {quant!r}; choose one of {', '.join(QUANTS)} "
                        "(Q4_K_M: small and fast · Q8_0: near-lossless · F16: exact)")
    return name


def converter_dir() -> Path:
    """llama.cpp's converter of the installed llama-cpp-python, extracted once from its sdist."""
    from omnilm.llamacpp.native import require_llama_cpp

    version = require_llama_cpp().__version__
    root = cache_dir("llama.cpp", f"converter-{version}")
    if all((root / part).exists() for part in _CONVERTER_PARTS):
        return root
    with tempfile.TemporaryDirectory(prefix="omnilm-sdist-") as tmp:
        logger.info("fetching llama.cpp's converter from the llama-cpp-python %s source distribution", version)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             f"llama-cpp-python=={version}", "-d", tmp], capture_output=True, text=True, check=False)
        sdists = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if done.returncode != 0 or not sdists:
            raise OmniError(f"could not download llama-cpp-python=={version}'s source (for its GGUF converter): "
                            f"{done.stderr.strip()[-500:]}; run `pip download --no-binary :all: --no-deps "
                            f"llama-cpp-python=={version}` where PyPI is reachable")
        with tarfile.open(sdists[0]) as archive, atomic_directory(root) as staging:
            prefix = f"{archive.getnames()[0].split('/')[0]}/vendor/llama.cpp/"
            members = [m for m in archive.getmembers() if m.isfile() and m.name.startswith(prefix)
                       and m.name[len(prefix):].startswith(_CONVERTER_PARTS)]
            for member in members:
                member.name = member.name[len(prefix):]
                archive.extract(member, staging, filter="data")
    return root


def convert(hf_dir: Path, out_file: Path, *, outtype: str, mmproj: bool = False) -> None:
    """Write `hf_dir` (a transformers causal LM with its tokenizer) as one GGUF of float type `outtype`; with
    `mmproj`, its media encoder and projector instead (a Llava or Ultravox directory), as llama.cpp's mmproj."""
    _run_converter([str(hf_dir), "--outfile", str(out_file), "--outtype", outtype, *(["--mmproj"] if mmproj else [])],
                   out_file, what=f"llama.cpp's converter failed on {hf_dir}")


def convert_lora(adapter_dir: Path, base_dir: Path, out_file: Path, *, outtype: str) -> None:
    """Write the PEFT adapter in `adapter_dir` (over the transformers LLM in `base_dir`) as a llama.cpp LoRA GGUF."""
    _run_converter(["--lora", str(adapter_dir), "--base", str(base_dir), "--outfile", str(out_file), "--outtype",
                    outtype], out_file, what=f"llama.cpp's LoRA converter failed on {adapter_dir}")


def _run_converter(args: list[str], out_file: Path, *, what: str) -> None:
    """converter_main.py with `args` in a subprocess; `what` and the converter's last words if no `out_file`."""
    done = subprocess.run([sys.executable, str(_RUNNER), str(converter_dir()), *args], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0 or not out_file.is_file():
        raise OmniError(f"{what}:\n{done.stderr.strip()[-2000:]}")


def quantize(src: Path, dst: Path, *, quant: str, threads: int | None = None) -> None:
    """Quantize GGUF `src` into `dst` with llama.cpp's quantizer."""
    from omnilm.llamacpp.native import require_llama_cpp

    lc = require_llama_cpp()
    params = lc.llama_model_quantize_default_params()
    params.ftype = getattr(lc, f"LLAMA_FTYPE_MOSTLY_{quant}")
    params.nthread = threads or 0  # 0: every core
    code = lc.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if code != 0 or not dst.is_file():
        raise OmniError(f"llama.cpp could not quantize {src} to {quant} (code {code})")
