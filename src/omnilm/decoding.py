"""Per-row logits shaping for one batch: logit bias, presence/frequency penalties, a grammar, log-probabilities.

transformers' own processors act on the whole batch with one setting; a server batch mixes requests with
their own biases, penalties and schemas, so `RowLogits` (one LogitsProcessor for the batch) hands each
unfinished row's scores to that row's `RowDecoding`. Its order, as OpenAI describes it: bias and penalties
change the logits, log-probabilities are read from them (the model's distribution, before the grammar),
then the grammar masks what may not come next. transformers runs custom processors after its own
(repetition penalty, suppressed tokens) and before temperature and top-p.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from omnilm.errors import OmniError

BITS = torch.arange(32, dtype=torch.int32)


class RowDecoding:
    """The shaping state of one answer: its token counts, its grammar matcher, its last log-probabilities."""

    def __init__(self, settings, tokenizer) -> None:
        self.settings, self.tokenizer = settings, tokenizer
        self.counts: Counter[int] = Counter()
        self.matcher, self.bitmask = None, None
        if settings.grammar is not None:
            import llguidance.torch

            self.matcher, self.vocab = settings.grammar.matcher(tokenizer)
            self.bitmask = llguidance.torch.allocate_token_bitmask(1, self.vocab)  # (1, ceil(V/32)) int32
        self.bias = dict(settings.logit_bias)
        self.logprobs: torch.Tensor | None = None  # (V,) of the step being sampled
        self.entries: list[dict] = []  # one per generated token, when logprobs were asked for

    @staticmethod
    def needed(settings) -> bool:
        return bool(settings.grammar is not None or settings.logit_bias or settings.presence_penalty
                    or settings.frequency_penalty or settings.logprobs)

    def shape(self, scores: torch.Tensor) -> None:
        """Change one row's next-token scores (V,) in place."""
        s = self.settings
        if self.bias:
            ids = torch.tensor([i for i in self.bias if i < scores.shape[0]], dtype=torch.long)
            scores[ids] += torch.tensor([self.bias[int(i)] for i in ids], dtype=scores.dtype)
        if self.counts and (s.presence_penalty or s.frequency_penalty):
            ids = torch.tensor(list(self.counts), dtype=torch.long)
            seen = torch.tensor(list(self.counts.values()), dtype=scores.dtype)
            scores[ids] -= s.frequency_penalty * seen + s.presence_penalty
        if s.logprobs:
            self.logprobs = torch.log_softmax(scores.float(), dim=-1)
        if self.matcher is not None:
            self._mask(scores)

    def _mask(self, scores: torch.Tensor) -> None:
        import llguidance.torch

        size, bitmask = self.vocab, self.bitmask
        llguidance.torch.fill_next_token_bitmask(self.matcher, bitmask, 0)
        if self.matcher.is_error():
            raise OmniError(f"constrained decoding failed: {self.matcher.get_error()}")
        size = min(size, scores.shape[0])  # the LM head and the tokenizer may count a few ids differently
        allowed = ((bitmask[0].unsqueeze(-1) >> BITS) & 1).bool().flatten()[:size]  # (V,) one bit per token
        scores[:size].masked_fill_(~allowed.to(scores.device), float("-inf"))
        scores[size:] = float("-inf")  # logits beyond the tokenizer's vocabulary (padding rows of the LM head)

    def accept(self, token: int) -> bool:
        """Record a generated token; True when the grammar is complete (nothing but the end may follow)."""
        self.counts[token] += 1
        if self.settings.logprobs and self.logprobs is not None:
            self.entries.append(self._entry(token))
        if self.matcher is None:
            return False
        if not self.matcher.consume_token(token):
            raise OmniError(f"constrained decoding failed: {self.matcher.get_error()}")
        return self.matcher.is_stopped()

    def _entry(self, token: int) -> dict[str, Any]:
        lp = self.logprobs
        entry = self._token(token, float(lp[token]))
        k = self.settings.top_logprobs
        if k:
            values, ids = lp.topk(k)
            entry["top_logprobs"] = [self._token(int(i), float(v)) for v, i in zip(values, ids, strict=True)]
        else:
            entry["top_logprobs"] = []
        return entry

    def _token(self, token: int, logprob: float) -> dict[str, Any]:
        text = self.tokenizer.decode([token])
        return {"token": text, "logprob": max(logprob, -9999.0), "bytes": list(text.encode("utf-8"))}


class RowLogits:
    """A transformers LogitsProcessor handing each unfinished row's scores to its RowDecoding."""

    def __init__(self, rows: list) -> None:
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for i, row in enumerate(self.rows):  # scores (B, V)
            if not row.done and row.decoding is not None:
                row.decoding.shape(scores[i])
        return scores
