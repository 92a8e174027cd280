"""VQAv2 accuracy: expected values derived by hand from the official rules (vqaEval.py)."""

from __future__ import annotations

import pytest

from omnilm.metrics import normalize_vqa_answer, vqa_accuracy


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("A dog", "dog"),  # articles dropped
        ("on the table", "on table"),
        ("an apple.", "apple"),  # full stop not followed by a digit is deleted
        ("Two", "2"),  # number words become digits
        ("none", "0"),
        ("3.5", "3.5"),  # a full stop before a digit stays
        ("3.5.", "3.5"),
        ("1,000", "1000"),  # a digit-comma-digit group: every punctuation mark is deleted
        ("yes, it is", "yes it is"),  # "," touches a space: deleted
        ("t-shirt", "t shirt"),  # "-" touches no space: becomes a space
        ("T - shirt", "t shirt"),  # "-" touches a space: deleted
        ("Yes!", "yes"),
        ('"yes"', "yes"),
        ("dont", "don't"),  # contractions restored
        ("isnt", "isn't"),
        ("whats", "what's"),
        ("im", "im"),  # the official table's key is "Im", which never matches lower-cased text
        ("The cat's", "cat's"),  # apostrophes stay
        ("yes\n", "yes"),
        ("10:30", "10:30"),  # colons stay
    ],
)
def test_normalisation(raw, normalized):
    assert normalize_vqa_answer(raw) == normalized


def test_full_agreement_after_normalisation():
    assert vqa_accuracy("a dog", ["dog"] * 10) == 1.0
    assert vqa_accuracy("Two.", ["2"] * 10) == 1.0
    assert vqa_accuracy("yes", ["no"] * 10) == 0.0


def test_partial_agreement_leave_one_out():
    # 1 matching answer: the 9 subsets that keep it give 1/3, the one that drops it gives 0 -> 0.3
    assert vqa_accuracy("red", ["red"] + ["blue"] * 9) == pytest.approx(0.3)
    # 2 matching: 2 subsets give 1/3, 8 give 2/3 -> (2/3 + 16/3) / 10 = 0.6
    assert vqa_accuracy("red", ["red"] * 2 + ["blue"] * 8) == pytest.approx(0.6)
    # 3 matching ("Two" normalises to "2"): 3 subsets give 2/3, 7 give 1 -> 0.9
    assert vqa_accuracy("Two", ["2"] * 3 + ["3"] * 7) == pytest.approx(0.9)
    # 4 or more matching: every subset keeps at least 3 -> 1.0
    assert vqa_accuracy("red", ["red"] * 4 + ["blue"] * 6) == 1.0


def test_mixed_spellings_count_as_matches():
    answers = ["the T-shirt", "t shirt", "T - shirt", "shirt", "shirt", "shirt", "polo", "polo", "tee", "tee"]
    assert vqa_accuracy("t-shirt", answers) == pytest.approx(0.9)  # three "t shirt" after normalisation
    assert vqa_accuracy("cats", ["cat's"] * 10) == 0.0


def test_single_reference_answer_is_a_normalised_match():
    assert vqa_accuracy("The circle.", ["circle"]) == 1.0
    assert vqa_accuracy("Two", ["2"]) == 1.0
    assert vqa_accuracy("square", ["circle"]) == 0.0
    # two answers: the official leave-one-out formula applies (each subset has one answer: 1/3 or 0)
    assert vqa_accuracy("red", ["red", "blue"]) == pytest.approx((0 + 1 / 3) / 2)


def test_no_answers_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        vqa_accuracy("yes", [])
