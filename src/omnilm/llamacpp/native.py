"""llama.cpp through llama-cpp-python's low-level API: one model, one context, token and embedding batches.

`Runtime` owns a `llama_model` and a `llama_context` whose KV cache holds up to `n_seq` sequences in one
unified pool of `n_ctx` cells. `decode` feeds token ids or embeddings (the media features of omnilm's
connectors) at given positions of given sequences; the logits of the last decode are sampled in place.
"""

from __future__ import annotations

import ctypes
import logging
import os
import weakref
from pathlib import Path
from types import ModuleType

import numpy as np

from omnilm.errors import OmniError

logger = logging.getLogger(__name__)
native_logger = logging.getLogger("omnilm.llamacpp.native.llama")

# A build that runs on any x86-64 with AVX2: native flags die with SIGILL on AMX machines, AVX-512 on older CPUs.
PORTABLE_CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF "
    "-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF"
)
INSTALL_COMMAND = f'CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}" pip install "omnilm[llamacpp]"'
_LOG_LEVELS = {1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR, 4: logging.DEBUG}
_log_callback = None  # kept alive: llama.cpp holds a pointer to it


def require_llama_cpp() -> ModuleType:
    """The `llama_cpp` module, with llama.cpp's logging sent to Python's (debug level); a clear error if absent."""
    global _log_callback
    try:
        import llama_cpp
    except ImportError as err:
        raise OmniError(f"the llama.cpp engine needs llama-cpp-python (builds from source, ~6 min on 2 cores): "
                        f"{INSTALL_COMMAND}") from err
    if _log_callback is None:
        @llama_cpp.llama_log_callback
        def route(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
            native_logger.log(min(_LOG_LEVELS.get(level, logging.DEBUG), logging.DEBUG), "%s",
                              text.decode("utf-8", "replace").rstrip())

        _log_callback = route
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
    return llama_cpp


def gguf_facts(path: str | Path) -> dict:
    """Architecture, width and vocabulary size of a GGUF file; a clear error if it is missing or truncated."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise OmniError(f"no GGUF file at {path}; write one with `omnilm export MODEL OUT --to gguf`")
    try:
        reader = gguf.GGUFReader(str(path))
        end = max(t.data_offset + t.n_bytes for t in reader.tensors)
    except Exception as err:  # the reader fails in many ways on a cut file: name the file, not its internals
        raise OmniError(f"{path} is not a readable GGUF file (truncated or corrupt: {err}); export it again") from err
    if end > path.stat().st_size:
        raise OmniError(f"{path} is truncated ({path.stat().st_size} of {end} bytes); export it again")
    field = reader.get_field("general.architecture")
    arch = field.contents()
    width = reader.get_field(f"{arch}.embedding_length")
    return {"architecture": arch, "n_embd": int(width.contents()) if width else None, "tensors": len(reader.tensors)}


class Runtime:
    """One llama.cpp model and context. Not thread-safe: one caller at a time (the engine holds a lock)."""

    def __init__(self, path: str | Path, *, n_ctx: int, n_seq: int, n_batch: int = 512,
                 n_threads: int | None = None, lora: str | Path | None = None) -> None:
        lc = self.lc = require_llama_cpp()
        threads = n_threads or len(os.sched_getaffinity(0))
        params = lc.llama_model_default_params()
        self.model = lc.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise OmniError(f"llama.cpp could not load {path} (turn on debug logging for llama.cpp's reason)")
        self.adapter = None
        cparams = lc.llama_context_default_params()
        cparams.n_ctx, cparams.n_batch, cparams.n_ubatch, cparams.n_seq_max = n_ctx, n_batch, n_batch, n_seq
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.kv_unified = True  # one pool of cells for every sequence: a long conversation may use most of it
        self.ctx = lc.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            lc.llama_model_free(self.model)
            raise OmniError(f"llama.cpp could not create a context of {n_ctx} tokens × {n_seq} sequences")
        if lora is not None:
            self.adapter = lc.llama_adapter_lora_init(self.model, str(lora).encode())
            if not self.adapter:
                raise OmniError(f"llama.cpp could not load the LoRA adapter {lora}")
            adapters, scales = (lc.llama_adapter_lora_p_ctypes * 1)(self.adapter), (ctypes.c_float * 1)(1.0)
            lc.llama_set_adapters_lora(self.ctx, adapters, 1, scales)
        self.vocab = lc.llama_model_get_vocab(self.model)
        self.n_vocab = lc.llama_vocab_n_tokens(self.vocab)
        self.n_embd = lc.llama_model_n_embd(self.model)
        self.n_ctx, self.n_seq, self.n_batch = lc.llama_n_ctx(self.ctx), n_seq, n_batch
        self.memory = lc.llama_get_memory(self.ctx)
        self._tokens = lc.llama_batch_init(n_batch, 0, 1)
        self._embeds = lc.llama_batch_init(n_batch, self.n_embd, 1)
        self._finalizer = weakref.finalize(self, _free, lc, self.ctx, self.model, self.adapter,
                                           (self._tokens, self._embeds))

    def decode_tokens(self, rows: list[tuple[int, int, int, bool]]) -> None:
        """Feed (seq, pos, token, want_logits) rows, `n_batch` at a time; logits index = row index in the last call."""
        for start in range(0, len(rows), self.n_batch):
            chunk = rows[start:start + self.n_batch]
            batch = self._tokens
            for i, (seq, pos, token, logits) in enumerate(chunk):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, logits
                batch.seq_id[i][0] = seq
            batch.n_tokens = len(chunk)
            self._decode(batch)

    def decode_embeddings(self, seq: int, pos: int, embeds: np.ndarray, *, logits_last: bool) -> None:
        """Feed embeddings (T, n_embd) at positions pos… of `seq`; logits for the last one if asked."""
        embeds = np.ascontiguousarray(embeds, dtype=np.float32)  # (T, D)
        if embeds.ndim != 2 or embeds.shape[1] != self.n_embd:
            raise OmniError(f"media features of shape {tuple(embeds.shape)} do not fit the GGUF's width {self.n_embd}")
        batch = self._embeds
        for start in range(0, len(embeds), self.n_batch):
            chunk = embeds[start:start + self.n_batch]  # (t, D)
            ctypes.memmove(batch.embd, chunk.ctypes.data, chunk.nbytes)
            for i in range(len(chunk)):
                batch.pos[i], batch.n_seq_id[i], batch.logits[i] = pos + start + i, 1, False
                batch.seq_id[i][0] = seq
            if logits_last and start + len(chunk) == len(embeds):
                batch.logits[len(chunk) - 1] = True
            batch.n_tokens = len(chunk)
            self._decode(batch)

    def _decode(self, batch) -> None:
        code = self.lc.llama_decode(self.ctx, batch)
        if code == 1:
            raise KVCacheFull("llama.cpp's KV cache is full")
        if code != 0:
            raise OmniError(f"llama_decode failed (code {code})")

    def logits(self, index: int) -> np.ndarray:
        """The logits (n_vocab,) of row `index` of the last decode (a view: valid until the next decode)."""
        return np.ctypeslib.as_array(self.lc.llama_get_logits_ith(self.ctx, index), shape=(self.n_vocab,))

    def forget(self, seq: int, start: int = 0) -> None:
        """Drop sequence `seq`'s cached positions from `start` on."""
        self.lc.llama_memory_seq_rm(self.memory, seq, start, -1)

    def close(self) -> None:
        """Free the context, adapter and model now (else when the Runtime is collected)."""
        self._finalizer()


def _free(lc, ctx, model, adapter, batches) -> None:
    for batch in batches:
        lc.llama_batch_free(batch)
    lc.llama_free(ctx)
    if adapter:
        lc.llama_adapter_lora_free(adapter)
    lc.llama_model_free(model)


class KVCacheFull(OmniError):
    """No free cells left in the KV cache for this batch."""
