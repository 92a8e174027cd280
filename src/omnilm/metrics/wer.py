"""Word error rate: (substitutions + deletions + insertions) / reference words, over a corpus."""

from __future__ import annotations

import re
from collections.abc import Sequence

_NON_WORD = re.compile(r"[^\w\s']", re.UNICODE)


def normalize_text(text: str) -> str:
    """Lower-case, drop punctuation except apostrophes inside words, collapse whitespace."""
    text = _NON_WORD.sub(" ", text.lower())
    return " ".join(word.strip("'") for word in text.split() if word.strip("'"))


def edit_distance(hypothesis: Sequence[str], reference: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences."""
    previous = list(range(len(reference) + 1))
    for i, hyp_token in enumerate(hypothesis, start=1):
        current = [i]
        for j, ref_token in enumerate(reference, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (hyp_token != ref_token)))
        previous = current
    return previous[-1]


def whisper_normalize(text: str) -> str:
    """Whisper's English normaliser (spellings, numbers, contractions), as LibriSpeech WERs are reported."""
    from whisper_normalizer.english import EnglishTextNormalizer

    global _WHISPER
    if _WHISPER is None:
        _WHISPER = EnglishTextNormalizer()
    return _WHISPER(text)


_WHISPER = None


def wer(hypotheses: str | Sequence[str], references: str | Sequence[str], normalize: bool | str = True) -> float:
    """Corpus WER: total word edits over total reference words (a single pair may be given as strings).

    With ``normalize`` (default) both sides go through :func:`normalize_text`; ``normalize="whisper"``
    uses Whisper's English normaliser instead (:func:`whisper_normalize`). An empty reference corpus
    gives 0.0 when the hypotheses are empty too and raises ValueError otherwise (WER is undefined).
    """
    if isinstance(hypotheses, str) != isinstance(references, str):
        raise TypeError("pass two strings or two sequences of strings to wer()")
    if isinstance(hypotheses, str):
        hypotheses, references = [hypotheses], [references]
    if len(hypotheses) != len(references):
        raise ValueError(f"wer() got {len(hypotheses)} hypotheses but {len(references)} references")
    prepare = whisper_normalize if normalize == "whisper" else normalize_text if normalize else (lambda text: text)
    edits, words = 0, 0
    for hypothesis, reference in zip(hypotheses, references):
        hyp_words, ref_words = prepare(hypothesis).split(), prepare(reference).split()
        edits += edit_distance(hyp_words, ref_words)
        words += len(ref_words)
    if words == 0:
        if edits == 0:
            return 0.0
        raise ValueError("WER is undefined: the references contain no words")
    return edits / words
