"""WER, exact match, Recall@K and zero-shot accuracy on cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from omnilm.metrics import exact_match, recall_at_k, wer, zero_shot_accuracy


def test_wer_cases():
    assert wer("the cat sat", "the cat sat") == 0.0
    assert wer("the cat", "the cat sat") == pytest.approx(1 / 3)  # one deletion
    assert wer("the big cat sat", "the cat sat") == pytest.approx(1 / 3)  # one insertion
    assert wer("a dog sat", "the cat sat") == pytest.approx(2 / 3)  # two substitutions
    assert wer("x y z", "a") == 3.0  # WER can exceed 1
    assert wer("The cat, sat!", "the cat sat") == 0.0  # normalised
    assert wer("The cat, sat!", "the cat sat", normalize=False) == 1.0  # "The", "cat,", "sat!" all differ
    assert wer("It's here.", "it's here") == 0.0  # apostrophes inside words survive normalisation
    assert wer(["a b", "c"], ["a b c", "c"]) == pytest.approx(1 / 4)  # corpus level: 1 edit / 4 words
    assert wer("", "") == 0.0
    with pytest.raises(ValueError, match="no words"):
        wer("x", "")
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        wer(["a", "b"], ["a"])


def test_exact_match():
    assert exact_match("Yes.", "yes") == 1.0
    assert exact_match("  Blue  circle ", ["red", "blue circle"]) == 1.0
    assert exact_match("yes it is", ["yes"]) == 0.0
    assert exact_match("Yes.", "yes", normalize=False) == 0.0


def test_recall_at_k_square():
    sim = np.array([[0.9, 0.1, 0.0], [0.8, 0.7, 0.1], [0.0, 0.3, 0.2]])
    # image->text: image0 ranks text0 1st; image1 ranks text1 2nd; image2 ranks text2 2nd
    # text->image: text0 ranks image0 1st; text1 ranks image1 1st; text2 ranks image2 1st
    r = recall_at_k(sim, ks=(1, 2))
    assert r["image_to_text/R@1"] == pytest.approx(1 / 3)
    assert r["image_to_text/R@2"] == 1.0
    assert r["text_to_image/R@1"] == 1.0


def test_recall_at_k_several_captions_per_image():
    sim = np.array([[0.1, 0.9, 0.5, 0.2], [0.6, 0.0, 0.4, 0.8]])
    owner = [0, 0, 1, 1]  # texts 0, 1 describe image 0; texts 2, 3 image 1
    r = recall_at_k(sim, ks=(1,), text_to_image=owner)
    assert r["image_to_text/R@1"] == 1.0  # both images have a matching text first
    # text0 prefers image1 (wrong), text1 image0 (right), text2 image0 (wrong), text3 image1 (right)
    assert r["text_to_image/R@1"] == 0.5
    with pytest.raises(ValueError, match="text_to_image"):
        recall_at_k(sim)


def test_zero_shot_accuracy():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [1.0, 2.0, 0.5]])
    assert zero_shot_accuracy(logits, [0, 2, 0]) == pytest.approx(2 / 3)
    assert zero_shot_accuracy(logits, [0, 2, 0], k=2) == 1.0
    with pytest.raises(ValueError, match="labels"):
        zero_shot_accuracy(logits, [0, 1])
