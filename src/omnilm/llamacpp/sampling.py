"""Choosing each row's next token from llama.cpp's logits, as omnilm's GenerationSettings ask.

Greedy decoding is an argmax over the logits (the PyTorch path's choice, ties included); sampling and the
repetition penalty use llama.cpp's own sampler chain (penalties → top-k → top-p → temperature → draw).
Settings llama.cpp cannot honour are refused, never ignored.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from omnilm.errors import OmniError
from omnilm.generation import GenerationSettings

# Fields this engine honours; any other field set away from its default is refused (new fields included).
SUPPORTED = {"max_new_tokens", "temperature", "top_p", "top_k", "stop", "seed", "repetition_penalty",
             "min_new_tokens", "ignore_eos", "use_cache", "num_beams"}


def check_supported(settings: GenerationSettings) -> None:
    """Refuse what the llama.cpp engine cannot do, naming the setting and the way out."""
    defaults = GenerationSettings()
    for f in dataclasses.fields(settings):
        if f.name not in SUPPORTED and getattr(settings, f.name) != getattr(defaults, f.name):
            raise OmniError(f"the llama.cpp engine does not support generation setting {f.name!r}; "
                            "drop it or load the model with engine='torch'")
    if settings.num_beams > 1:
        raise OmniError("the llama.cpp engine has no beam search (num_beams > 1); use num_beams=1 or engine='torch'")


class RowSampler:
    """The next-token choice of one row; `eos_ids` are banned while EOS is not allowed yet."""

    def __init__(self, lc, settings: GenerationSettings, *, n_vocab: int, eos_ids: set[int],
                 default_penalty: float | None = None) -> None:
        self.lc, self.settings = lc, settings
        self.eos = np.array(sorted(t for t in eos_ids if t < n_vocab), dtype=np.int64)
        penalty = settings.repetition_penalty or default_penalty
        self.chain = None
        if settings.sampling or (penalty and penalty != 1.0):
            self.chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())

            def add(sampler) -> None:
                lc.llama_sampler_chain_add(self.chain, sampler)

            if penalty and penalty != 1.0:  # generated tokens only, as transformers does given inputs_embeds
                add(lc.llama_sampler_init_penalties(n_vocab, settings.max_new_tokens, penalty, 0.0, 0.0))
            if settings.sampling:
                if settings.top_k:
                    add(lc.llama_sampler_init_top_k(settings.top_k))
                if settings.top_p < 1.0:
                    add(lc.llama_sampler_init_top_p(settings.top_p, 1))
                add(lc.llama_sampler_init_temp(settings.temperature))
                seed = lc.LLAMA_DEFAULT_SEED if settings.seed is None else settings.seed & 0xFFFFFFFF
                add(lc.llama_sampler_init_dist(seed))
            else:
                add(lc.llama_sampler_init_greedy())

    def next(self, runtime, index: int, generated: int) -> int:
        """Sample row `index` of the last decode; `generated` tokens of this row came before."""
        logits = runtime.logits(index)  # (V,) llama.cpp's buffer: banning EOS edits it in place
        settings = self.settings
        if self.eos.size and (settings.ignore_eos or generated < (settings.min_new_tokens or 0)):
            logits[self.eos] = -np.inf
        if self.chain is None:
            return int(logits.argmax())
        return int(self.lc.llama_sampler_sample(self.chain, runtime.ctx, index))

    def close(self) -> None:
        if self.chain is not None:
            self.lc.llama_sampler_free(self.chain)
            self.chain = None
