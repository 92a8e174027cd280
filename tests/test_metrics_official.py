"""omnilm's benchmark metrics equal the official scorers' figures on fixtures in each benchmark's schema.

The figures were produced by running each official implementation (named in tests/metric_fixtures.py and
docs/benchmarks.md) on exactly these fixtures, outside the repository.
"""

from __future__ import annotations

import pytest

from metric_fixtures import ANLS, CHARTQA, CHOICE, MME_CATEGORIES, POPE, VQA, WER, mme_rows
from omnilm.metrics import anls, mme_scores, parse_choice, pope_scores, relaxed_accuracy, vqa_accuracy, wer

# VQAEval.evaluate (GT-Vision-Lab/VQA), on predictions normalised as the evaluation server does
OFFICIAL_VQA = [100.0, 100.0, 90.0, 100.0, 100.0, 90.0, 60.0, 100.0, 100.0, 90.0]
OFFICIAL_VQA_OVERALL = 93.0
# infographicsvqa_eval.py evaluate_method (DocVQA / InfographicVQA, RRC)
OFFICIAL_ANLS = [1.0, 1.0, 0.8181818181818181, 0.875, 0.6666666666666667, 0.875, 0.0, 0.0, 0.75]
OFFICIAL_ANLS_OVERALL = 0.664983164983165
# relaxed_correctness (lmms-eval chartqa, from Qwen-VL evaluate_vqa.py)
OFFICIAL_CHARTQA = [1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
# POPE evaluate.py
OFFICIAL_POPE = {"accuracy": 0.5833333333333334, "precision": 0.5714285714285714, "recall": 0.6666666666666666,
                 "f1": 0.6153846153846153, "yes_ratio": 0.5833333333333334}
# MME eval_tool/calculation.py (printed per subtask, then the perception and cognition totals)
OFFICIAL_MME = {"existence": 125.0, "count": 50.0, "position": 25.0, "color": 50.0, "posters": 0.0, "celebrity": 50.0,
                "scene": 25.0, "landmark": 125.0, "artwork": 125.0, "OCR": 25.0, "commonsense_reasoning": 50.0,
                "numerical_calculation": 25.0, "text_translation": 50.0, "code_reasoning": 50.0,
                "perception": 600.0, "cognition": 175.0}
# MMMU parse_multi_choice_response
OFFICIAL_MMMU = ["B", "C", "B", "D", "B", "A", "D", "B"]
# Whisper EnglishTextNormalizer + jiwer.wer
OFFICIAL_WER = 0.029411764705882353


def test_vqa_accuracy_equals_the_official_vqa_eval():
    scores = [100 * vqa_accuracy(prediction, answers) for prediction, answers in VQA]
    assert scores == pytest.approx(OFFICIAL_VQA, abs=1e-9)
    assert round(sum(scores) / len(scores), 2) == OFFICIAL_VQA_OVERALL  # the official rounds to 2 decimals


def test_anls_equals_the_docvqa_evaluation_script():
    scores = [anls(prediction, answers) for prediction, answers in ANLS]
    assert scores == pytest.approx(OFFICIAL_ANLS, abs=1e-12)
    assert sum(scores) / len(scores) == pytest.approx(OFFICIAL_ANLS_OVERALL, abs=1e-12)


def test_relaxed_accuracy_equals_chartqa_relaxed_correctness():
    assert [relaxed_accuracy(p, a) for p, a in CHARTQA] == OFFICIAL_CHARTQA


def test_pope_scores_equal_pope_evaluate():
    assert pope_scores([r for r, _ in POPE], [label for _, label in POPE]) == pytest.approx(OFFICIAL_POPE, abs=1e-12)


def test_mme_scores_equal_the_mme_calculation_script():
    rows = mme_rows()
    scores = mme_scores([r[3] for r in rows], [r[2] for r in rows], [r[1] for r in rows], [r[0] for r in rows])
    assert set(scores) == set(MME_CATEGORIES) | {"perception", "cognition"}
    assert scores == pytest.approx(OFFICIAL_MME, abs=1e-9)


def test_choice_parsing_equals_mmmu_where_mmmu_is_deterministic():
    assert [parse_choice(reply, options) for reply, options, _ in CHOICE] == OFFICIAL_MMMU
    assert [gold for _, _, gold in CHOICE] == OFFICIAL_MMMU  # the fixture's replies all parse to their gold
    assert parse_choice("no idea at all", ["x", "y"]) == ""  # MMMU would draw a random letter here
    assert parse_choice("B. because y", ["x", "y"]) == "B"  # LLaVA's ScienceQA "X." rule, where MMMU finds nothing


def test_whisper_normalised_wer_equals_whisper_and_jiwer():
    assert wer([h for h, _ in WER], [r for _, r in WER], normalize="whisper") == pytest.approx(OFFICIAL_WER, abs=1e-12)
    assert wer([h for h, _ in WER], [r for _, r in WER]) > OFFICIAL_WER  # plain normalisation counts spellings
