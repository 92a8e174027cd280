"""Evaluation metrics whose numbers equal the reference implementations'.

Captions: :func:`caption_scores` (BLEU-1..4, ROUGE-L, CIDEr-D in pure Python; METEOR and SPICE through
pycocoevalcap's jars where Java and the jars are present). Answers: :func:`vqa_accuracy`,
:func:`exact_match`, :func:`anls` (DocVQA), :func:`relaxed_accuracy` (ChartQA), :func:`parse_choice`
(multiple choice), :func:`pope_scores`, :func:`mme_scores`. Speech: :func:`wer` (Whisper normalisation
with ``normalize="whisper"``). Dual encoders: :func:`recall_at_k`, :func:`zero_shot_accuracy`.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence

from omnilm.metrics.anls import anls
from omnilm.metrics.bleu import bleu
from omnilm.metrics.choice import format_options, parse_choice
from omnilm.metrics.cider import cider_d
from omnilm.metrics.exact import exact_match, normalize_answer
from omnilm.metrics.meteor import meteor, meteor_unavailable
from omnilm.metrics.relaxed import relaxed_accuracy
from omnilm.metrics.retrieval import recall_at_k, zero_shot_accuracy
from omnilm.metrics.rouge import rouge_l
from omnilm.metrics.spice import spice, spice_unavailable
from omnilm.metrics.tokenize import ptb_tokenize, tokenize_captions
from omnilm.metrics.vqa import normalize_vqa_answer, vqa_accuracy
from omnilm.metrics.wer import wer, whisper_normalize
from omnilm.metrics.yesno import mme_answer, mme_scores, pope_answer, pope_scores

logger = logging.getLogger(__name__)

__all__ = [
    "anls", "bleu", "caption_scores", "cider_d", "exact_match", "format_options", "meteor", "meteor_unavailable",
    "mme_answer", "mme_scores", "normalize_answer", "normalize_vqa_answer", "parse_choice", "pope_answer",
    "pope_scores", "ptb_tokenize", "recall_at_k", "relaxed_accuracy", "rouge_l", "spice", "spice_unavailable",
    "tokenize_captions", "vqa_accuracy", "wer", "whisper_normalize", "zero_shot_accuracy",
]


def _check(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> None:
    missing = [k for k in predictions if k not in references]
    extra = [k for k in references if k not in predictions]
    if missing or extra:
        raise ValueError(
            f"caption_scores needs the same ids on both sides: {len(missing)} predictions without references "
            f"(e.g. {missing[:3]}), {len(extra)} references without predictions (e.g. {extra[:3]})"
        )
    for key, refs in references.items():
        if isinstance(refs, str) or not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"references[{key!r}] must be a non-empty list of strings, got {refs!r}")
        if not isinstance(predictions[key], str):
            raise ValueError(f"predictions[{key!r}] must be a string, got {type(predictions[key]).__name__}")
    if not predictions:
        raise ValueError("caption_scores got no predictions")


def caption_scores(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    *,
    use_meteor: bool = True,
    use_spice: bool = True,
) -> dict:
    """COCO caption metrics for ``{id: caption}`` against ``{id: [reference, ...]}`` (raw, untokenized text).

    Both sides go through the PTB-style tokenizer first, as in the COCO evaluation. Returns ``BLEU-1``..
    ``BLEU-4``, ``ROUGE-L``, ``CIDEr`` and, where they can run, ``METEOR`` and ``SPICE``; ``unavailable``
    maps each metric that could not run (or was switched off) to the reason.
    """
    _check(predictions, references)
    hyps = {key: ptb_tokenize(text) for key, text in predictions.items()}
    refs = {key: [ptb_tokenize(text) for text in references[key]] for key in hyps}
    bleu_scores, _ = bleu(hyps, refs)
    scores: dict = {f"BLEU-{n}": value for n, value in enumerate(bleu_scores, start=1)}
    scores["ROUGE-L"] = rouge_l(hyps, refs)[0]
    scores["CIDEr"] = cider_d(hyps, refs)[0]
    unavailable = {}
    for name, enabled, reason, scorer in (
        ("METEOR", use_meteor, meteor_unavailable, meteor),
        ("SPICE", use_spice, spice_unavailable, spice),
    ):
        problem = reason() if enabled else "switched off by the caller"
        if problem is None:
            try:
                scores[name] = scorer(hyps, refs)[0]
                continue
            except (RuntimeError, OSError) as error:
                problem = str(error)
        logger.info("%s not computed: %s", name, problem)
        unavailable[name] = problem
    scores["unavailable"] = unavailable
    return scores
