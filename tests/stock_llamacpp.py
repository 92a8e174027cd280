"""Stock llama.cpp through llama-cpp-python's own bindings, importing nothing of omnilm: the reference side of
the `--to llama.cpp` export tests. A text GGUF + mmproj pair, a prompt rendered with the GGUF's own chat
template, media given as file bytes (PNG, WAV) for mtmd to decode, greedy decoding."""

from __future__ import annotations

import ctypes

import numpy as np


class StockPair:
    """`model.gguf` + `mmproj.gguf` as llama-mtmd-cli loads them (CPU, one sequence)."""

    def __init__(self, model_path: str, mmproj_path: str, *, n_ctx: int = 2048) -> None:
        import llama_cpp.mtmd_cpp as mtmd
        from llama_cpp import Llama

        self.mtmd = mtmd
        self.llm = Llama(model_path=model_path, n_ctx=n_ctx, n_batch=n_ctx, n_threads=2, verbose=False)
        params = mtmd.mtmd_context_params_default()
        params.use_gpu, params.n_threads, params.print_timings, params.warmup = False, 2, False, False
        self.ctx = mtmd.mtmd_init_from_file(mmproj_path.encode(), self.llm.model, params)
        assert self.ctx is not None, f"llama.cpp could not load {mmproj_path}"

    def close(self) -> None:
        self.mtmd.mtmd_free(self.ctx)
        self.llm.close()

    def render(self, messages: list[dict]) -> str:
        """The prompt, from the chat template stored in the GGUF (jinja2, as llama-cpp-python renders it)."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.llm.metadata["tokenizer.chat_template"]
        eos = self.llm.detokenize([self.llm.token_eos()]).decode()
        return Jinja2ChatFormatter(template, eos_token=eos, bos_token="")(messages=messages).prompt

    def greedy(self, prompt: str, media: list[bytes], *, max_new_tokens: int) -> tuple[list[int], list[int], np.ndarray]:
        """(the prompt's token ids, -1 for each media token; the greedy new token ids, stopping at
        end-of-generation; the logits before the first of them)."""
        import llama_cpp

        mtmd = self.mtmd
        bitmaps = []
        for data in media:
            buffer = (ctypes.c_ubyte * len(data)).from_buffer_copy(data)
            bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(self.ctx, buffer, len(data), False)
            assert bitmap is not None, "mtmd could not decode a media file"
            bitmaps.append(bitmap)
        text = mtmd.mtmd_input_text()
        encoded = prompt.encode()
        text.text, text.text_len, text.add_special, text.parse_special = encoded, len(encoded), True, True
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            array = (mtmd.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
            assert mtmd.mtmd_tokenize(self.ctx, chunks, ctypes.byref(text), array, len(bitmaps)) == 0
            prompt_ids = []
            for i in range(mtmd.mtmd_input_chunks_size(chunks)):
                chunk = mtmd.mtmd_input_chunks_get(chunks, i)
                if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    count = ctypes.c_size_t()
                    ids = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                    prompt_ids += [ids[j] for j in range(count.value)]
                else:
                    prompt_ids += [-1] * mtmd.mtmd_input_chunk_get_n_tokens(chunk)
            self.llm._ctx.kv_cache_clear()
            n_past = llama_cpp.llama_pos(0)
            assert mtmd.mtmd_helper_eval_chunks(self.ctx, self.llm._ctx.ctx, chunks, 0, 0, self.llm.n_batch, True,
                                                ctypes.byref(n_past)) == 0
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)
        vocab = self.llm.n_vocab()
        first, new = None, []
        for _ in range(max_new_tokens):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1), shape=(vocab,)).copy()
            first = logits if first is None else first
            token = int(logits.argmax())
            if llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, token):
                break
            new.append(token)
            batch = llama_cpp.llama_batch_get_one((llama_cpp.llama_token * 1)(token), 1)
            assert llama_cpp.llama_decode(self.llm._ctx.ctx, batch) == 0
        return prompt_ids, new, first
