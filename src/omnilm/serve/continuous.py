"""Continuous batching on the PyTorch path: a request that arrives while others decode joins at the next step.

`StepBatch` owns the running rows' KV cache (transformers' DynamicCache, each layer (B, H, L, D), left-padded).
Newcomers are prefilled as their own left-padded batch (media encoded once, scattered into their embeddings),
then their cache is padded on the left to the running length and concatenated on the batch axis; finished
rows are dropped and columns that only hold padding are cut. Each step feeds every row its last token with
position ids counted from its own mask. Tokens are chosen per row, in transformers' order: repetition
penalty, suppressed end-of-sequence (min_new_tokens, ignore_eos), the row's bias / penalties / grammar /
logprobs (omnilm.decoding), then temperature, top-k and top-p, with a generator per seeded row.

Not step-wise (`step_wise`), so served in request-level batches: beam search and no_repeat_ngram_size
(whole-batch processors), gated cross-attention (media attended at every step), and LLMs with sliding-window
layers — their cache keeps only the last W tokens per layer, which a left-padded merge would misalign.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from omnilm.generation import GenerationRequest, Row, eos_token_ids


def step_wise_model(lm) -> bool:
    """Whether `lm` can decode row by row: an OmniLM on the llama.cpp engine (a sequence per row), or on the
    torch engine without gated cross-attention or sliding windows."""
    engine = getattr(lm, "engine", None)
    if engine == "llama.cpp":
        return True
    if engine != "torch":
        return False
    model = getattr(lm, "model", None)
    if model is None or not hasattr(model, "llm") or getattr(model, "fusion", None) is not None:
        return False
    cache = DynamicCache(config=model.llm.config)
    return not any(getattr(layer, "is_sliding", False) for layer in cache.layers)


def new_step_batch(lm):
    """An empty running batch for `lm`: its engine's own (llama.cpp sequences) or the PyTorch KV cache's."""
    return lm.step_batch() if getattr(lm, "engine", None) == "llama.cpp" else StepBatch(lm)


def step_wise_request(request: GenerationRequest) -> bool:
    s = request.settings
    return s.num_beams == 1 and not s.no_repeat_ngram_size and s.use_cache


class _Live:
    """A row of the running batch: its output tracking (generation.Row), prompt ids and sampling generator."""

    def __init__(self, request: GenerationRequest, tokenizer, prompt_tokens: int, choice_seed: int | None):
        self.row = Row(request, tokenizer, prompt_tokens)
        self.settings = request.settings
        self.ids: list[int] = []  # generated tokens: what the repetition penalty looks at (as transformers does
        # when generating from embeddings, the library's path)
        self.generator = None
        if self.settings.sampling and choice_seed is not None:
            self.generator = torch.Generator().manual_seed(choice_seed)


class StepBatch:
    """The rows decoding together and their shared KV cache."""

    max_rows = None  # no limit of its own: the scheduler's max_batch_size

    def __init__(self, lm) -> None:
        self.lm, self.model, self.tokenizer = lm, lm.model, lm.processor.tokenizer
        self.eos = sorted(eos_token_ids(self.model.llm.generation_config, self.tokenizer))
        self.live: list[_Live] = []
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # (B, L) 1 where the cache holds a real token
        self.last: torch.Tensor | None = None  # (B,) each row's newest token, fed at the next step

    def __len__(self) -> int:
        return len(self.live)

    @torch.no_grad()
    def join(self, requests: list[GenerationRequest]) -> None:
        """Prefill `requests` together and add them to the running rows (their first token is chosen now)."""
        inputs = self.lm.prepare_inputs([r.messages for r in requests])
        ids, mask = inputs.pop("input_ids"), inputs.pop("attention_mask")  # (B2, L2)
        embeds, _ = self.model.embed(ids, **inputs)  # (B2, L2, D)
        cache = DynamicCache(config=self.model.llm.config)
        out = self.model.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=_positions(mask),
                             cache=cache, use_cache=True, logits_to_keep=1)
        seeds = [_seed(r) for r in requests]
        new = [_Live(r, self.tokenizer, int(m.sum()), s) for r, m, s in zip(requests, mask, seeds, strict=True)]
        tokens = self._choose(new, out.logits[:, -1])  # (B2,)
        self._merge(new, cache, mask, tokens)
        self._drop_finished()

    @torch.no_grad()
    def step(self) -> None:
        """One token for every running row."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self), 1)], dim=1)  # (B, L+1)
        positions = self.mask.sum(dim=1, keepdim=True) - 1  # (B, 1)
        out = self.model.llm(input_ids=self.last[:, None], attention_mask=self.mask, position_ids=positions,
                             cache=self.cache, use_cache=True, logits_to_keep=1)
        self.last = self._choose(self.live, out.logits[:, -1])
        self._drop_finished()

    def fail(self, err: BaseException) -> None:
        """Send `err` to every running row and empty the batch."""
        for live in self.live:
            if not live.row.done:
                live.row.done = True
                live.row.emit(("error", err))
        self.live, self.cache, self.mask, self.last = [], None, None, None

    # Steps --------------------------------------------------------------------------------------
    def _choose(self, rows: list[_Live], logits: torch.Tensor) -> torch.Tensor:
        """Each row's next token from its logits (B, V); the rows record it (and may finish)."""
        chosen = []
        for live, scores in zip(rows, logits.float(), strict=True):
            token = self._pick(live, scores.clone())
            live.ids.append(token)
            live.row.add(token, token in self.eos)
            chosen.append(token)
        return torch.tensor(chosen, dtype=torch.long, device=logits.device)

    def _pick(self, live: _Live, scores: torch.Tensor) -> int:
        s, row = live.settings, live.row
        scores = scores[None]  # (1, V): transformers' processors take a batch
        ids = torch.tensor([live.ids], dtype=torch.long, device=scores.device)  # (1, N_generated)
        if s.repetition_penalty is not None and live.ids:
            scores = RepetitionPenaltyLogitsProcessor(s.repetition_penalty)(ids, scores)
        if s.ignore_eos or (s.min_new_tokens and len(row.tokens) < s.min_new_tokens):
            scores[:, self.eos] = float("-inf")
        if row.decoding is not None:
            row.decoding.shape(scores[0])
        if not s.sampling:
            return int(scores.argmax())
        scores = TemperatureLogitsWarper(s.temperature)(ids, scores)
        if s.top_k:
            scores = TopKLogitsWarper(s.top_k)(ids, scores)
        if s.top_p < 1:
            scores = TopPLogitsWarper(s.top_p)(ids, scores)
        return int(torch.multinomial(scores.softmax(dim=-1)[0], 1, generator=live.generator))

    def _merge(self, new: list[_Live], cache: DynamicCache, mask: torch.Tensor, tokens: torch.Tensor) -> None:
        if self.cache is None or not self.live:
            self.live, self.cache, self.mask, self.last = new, cache, mask, tokens
            return
        length = max(self.mask.shape[1], mask.shape[1])
        for old_layer, new_layer in zip(self.cache.layers, cache.layers, strict=True):
            old_layer.keys = torch.cat([_pad_left(old_layer.keys, length), _pad_left(new_layer.keys, length)])
            old_layer.values = torch.cat([_pad_left(old_layer.values, length), _pad_left(new_layer.values, length)])
        self.mask = torch.cat([F.pad(self.mask, (length - self.mask.shape[1], 0)),
                               F.pad(mask, (length - mask.shape[1], 0))])  # (B + B2, length)
        self.live, self.last = self.live + new, torch.cat([self.last, tokens])

    def _drop_finished(self) -> None:
        keep = [i for i, live in enumerate(self.live) if not live.row.done]
        if len(keep) == len(self.live):
            return
        if not keep:
            self.live, self.cache, self.mask, self.last = [], None, None, None
            return
        index = torch.tensor(keep, device=self.mask.device)
        self.mask, self.last = self.mask[index], self.last[index]
        start = int((self.mask.sum(dim=0) > 0).nonzero()[0])  # columns before it are padding in every row
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[index, :, start:], layer.values[index, :, start:]
        self.live = [self.live[i] for i in keep]


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids (B, L) counted from each row's first real token (padding gets 0)."""
    return (mask.cumsum(dim=1) - 1).clamp(min=0)


def _pad_left(states: torch.Tensor, length: int) -> torch.Tensor:
    return F.pad(states, (0, 0, length - states.shape[2], 0))  # (B, H, L, D) → (B, H, length, D)


def _seed(request: GenerationRequest) -> int | None:
    """A seeded row's own generator seed: choice 0 samples as `lm.chat(seed=...)` does; the others differ."""
    seed = request.settings.seed
    return None if seed is None else seed + 1_000_003 * request.choice
