"""Run llama.cpp's convert_hf_to_gguf.py from CONVERTER_DIR with its own gguf-py (a script: imports no omnilm).

usage: python converter_main.py CONVERTER_DIR HF_DIR [convert_hf_to_gguf options]

One addition to the converter: it recognises a tokenizer by the hash of its ids for a test text, so a new
vocabulary (omnilm's tiny test models) is unknown to it even when its pre-tokenizer is a known one. Such a
byte-level BPE tokenizer whose pre-tokenizer is exactly Qwen2's split regex, or GPT-2's plain byte-level
regex, is written with llama.cpp's "qwen2" or "gpt2" pre-tokenizer; any other still fails as the converter decides.
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")


def _known_pre_tokenizer(tokenizer) -> str | None:
    """llama.cpp's name for `tokenizer`'s pre-tokenizer when it is one of two known exactly, else None."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = (json.loads(backend.to_str()).get("pre_tokenizer") or {}) if backend is not None else {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt2"
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    if (len(steps) == 2 and steps[0].get("type") == "Split" and steps[0].get("pattern") == {"Regex": QWEN2_SPLIT}
            and steps[1].get("type") == "ByteLevel" and not steps[1].get("use_regex", True)):
        return "qwen2"
    return None


def main(argv: list[str]) -> None:
    root = Path(argv[0])
    sys.path[:0] = [str(root), str(root / "gguf-py")]
    from conversion import base

    original = base.TextModel.get_vocab_base_pre

    def vocab_base_pre(self, tokenizer) -> str:
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            known = _known_pre_tokenizer(tokenizer)
            if known is None:
                raise
            return known

    base.TextModel.get_vocab_base_pre = vocab_base_pre
    sys.argv = [str(root / "convert_hf_to_gguf.py"), *argv[1:]]
    runpy.run_path(str(root / "convert_hf_to_gguf.py"), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
