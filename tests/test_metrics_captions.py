"""Caption metrics equal pycocoevalcap's (the reference) on generated hypothesis/reference sets."""

from __future__ import annotations

import random
import shutil

import pytest

from omnilm.metrics import bleu, caption_scores, cider_d, meteor, meteor_unavailable, ptb_tokenize, rouge_l
from omnilm.metrics import spice_unavailable, tokenize_captions

pycocoevalcap = pytest.importorskip("pycocoevalcap", reason="the reference: pip install pycocoevalcap")
from pycocoevalcap.bleu.bleu import Bleu  # noqa: E402
from pycocoevalcap.cider.cider import Cider  # noqa: E402
from pycocoevalcap.rouge.rouge import Rouge  # noqa: E402

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="the reference tokenizer and METEOR need Java")

SUBJECTS = ["man", "woman", "dog", "cat", "child", "group of people", "bird", "horse", "boy", "girl", "train",
            "bus", "plate of food", "red car", "skateboarder", "giraffe", "pizza", "teddy bear"]
ADJECTIVES = ["", "small", "large", "black and white", "black-and-white", "young", "old", "brown", "two", "3"]
VERBS = ["sitting on", "riding", "standing next to", "holding", "looking at", "eating", "walking down",
         "playing with", "laying on", "parked near", "flying over"]
OBJECTS = ["the beach", "a bench", "a table", "the street", "a field", "a skateboard", "the snow", "a kitchen",
           "a wooden fence", "the ocean", "a city street", "a frisbee", "the grass", "a tv"]
TAILS = ["", ".", " .", "!", " in the rain", ", smiling", " at night.", " (outdoors)", " while it's raining",
         "; it is sunny", ": a photo", " -- a photo", "...", " near the man's bike", " by the dogs' bowls",
         ' that says "stop".', " on St. Mary's street", " in the U.S.", " at 3 p.m.", " with 1,000 balloons",
         " for $5", " at 50% off", " and isn't moving", " that can't move", " and won't stop", " & friends",
         " [blurry]", " and/or a cat", " with a 2.5 inch screen", " 'hello'", " -- ", "?", " next to Dr. Smith"]


def caption(rng: random.Random) -> str:
    """An ordinary COCO-like caption with varied punctuation, case and contractions."""
    adjective = rng.choice(ADJECTIVES)
    article = rng.choice(["A", "a", "The", "the", "An", ""])
    words = " ".join(w for w in (article, adjective, rng.choice(SUBJECTS)) if w)
    text = f"{words} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(TAILS)}"
    style = rng.random()
    if style < 0.15:
        text = text.upper()
    elif style < 0.3:
        text = "There's " + text[0].lower() + text[1:]
    elif style < 0.35:
        text = "  " + text + "  "
    return text


def caption_set(seed: int) -> tuple[dict, dict]:
    """One evaluation set: 3-12 images, one hypothesis and 1-5 references each (raw text)."""
    rng = random.Random(seed)
    hyps, refs = {}, {}
    for image in range(rng.randint(3, 12)):
        key = f"img{seed}_{image}"
        references = [caption(rng) for _ in range(rng.randint(1, 5))]
        roll = rng.random()
        if roll < 0.2:  # a copy of a reference, perhaps with different case/punctuation
            hyps[key] = rng.choice(references).lower().rstrip(".") + "."
        elif roll < 0.25:
            hyps[key] = rng.choice(SUBJECTS)  # very short
        else:
            hyps[key] = caption(rng)
        refs[key] = references
    return hyps, refs


SEEDS = range(60)


@needs_java
def test_tokenizer_matches_stanford_ptb_tokenizer():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    rng = random.Random(1234)
    captions = [caption(rng) for _ in range(400)]
    captions += [
        "A man's colour photo, isn't it?", "He can't and won't; cannot.", "Two dogs' toys; the cats' bowls.",
        "I'm you're we've they'd she'll", 'the sign reads "STOP".', "a 'no parking' sign", "a dog-  and a cat --",
        "a cat...sleeping", "a man,a woman.A child", "the bus is no. 5 and no.", "a # 1 fan with 50 % off & more",
        "an 18-wheeler , pre-school, re-enter, e-mail", "the 1990's and '90s", "it's 'cause dogs' o' rock 'n roll",
        "a (red) [blue] {green} ball", "what?! yes!! no?? ok.", "don’t it’s ‘hi’ “curly” – —", "gotta go wanna gonna",
        "A TOILET WITH A SEAT UP IN A BATHROOM", "vitamin c. is good", "the letter a.", "Mr. Smith and Mrs. Jones.",
    ]
    reference = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    ours = [ptb_tokenize(c) for c in captions]
    mismatches = [(c, reference[i][0], ours[i]) for i, c in enumerate(captions) if reference[i][0] != ours[i]]
    assert not mismatches, mismatches[:10]


def test_tokenizer_examples():
    assert ptb_tokenize("A Man's dog isn't here.") == "a man 's dog is n't here"
    assert ptb_tokenize('He said "hi" (twice)!') == "he said hi -lrb- twice -rrb-"
    assert tokenize_captions({7: ["Two dogs, playing.", "CAN'T"]}) == {7: ["two dogs playing", "ca n't"]}


@pytest.mark.parametrize("seed", SEEDS)
def test_bleu_rouge_cider_equal_reference(seed):
    hyps, refs = caption_set(seed)
    hyps = {k: ptb_tokenize(v) for k, v in hyps.items()}
    refs = tokenize_captions(refs)
    res = {k: [v] for k, v in hyps.items()}

    ref_bleu, ref_bleu_items = Bleu(4).compute_score(refs, res, verbose=0)
    ours_bleu, ours_bleu_items = bleu(hyps, refs)
    assert ours_bleu == pytest.approx(ref_bleu, abs=1e-6, rel=0)
    for n in range(4):
        assert [ours_bleu_items[k][n] for k in refs] == pytest.approx(ref_bleu_items[n], abs=1e-6, rel=0)

    ref_rouge, ref_rouge_items = Rouge().compute_score(refs, res)
    ours_rouge, ours_rouge_items = rouge_l(hyps, refs)
    assert ours_rouge == pytest.approx(ref_rouge, abs=1e-6, rel=0)
    assert list(ours_rouge_items.values()) == pytest.approx(list(ref_rouge_items), abs=1e-6, rel=0)

    ref_cider, ref_cider_items = Cider().compute_score(refs, res)
    ours_cider, ours_cider_items = cider_d(hyps, refs)
    assert ours_cider == pytest.approx(ref_cider, abs=1e-6, rel=0)
    assert list(ours_cider_items.values()) == pytest.approx(list(ref_cider_items), abs=1e-6, rel=0)


def test_generated_sets_are_not_trivial():
    """The comparison above covers a spread of scores, not just zeros and ones."""
    ciders, bleus = [], []
    for seed in SEEDS:
        hyps, refs = caption_set(seed)
        hyps, refs = {k: ptb_tokenize(v) for k, v in hyps.items()}, tokenize_captions(refs)
        ciders.append(cider_d(hyps, refs)[0])
        bleus.append(bleu(hyps, refs)[0][3])
    assert len(SEEDS) >= 50
    assert min(ciders) < 0.5 < max(ciders) and len({round(c, 6) for c in ciders}) == len(ciders)
    assert max(bleus) > 0.1


def test_edge_cases_equal_reference():
    hyps = {"a": "", "b": "a dog", "c": "dog dog dog dog", "d": "a cat on a mat"}
    refs = {"a": ["a dog runs"], "b": ["a dog", "the dog runs fast"], "c": ["dog"], "d": ["a cat on a mat"]}
    res = {k: [v] for k, v in hyps.items()}
    assert bleu(hyps, refs)[0] == pytest.approx(Bleu(4).compute_score(refs, res, verbose=0)[0], abs=1e-6, rel=0)
    assert rouge_l(hyps, refs)[0] == pytest.approx(Rouge().compute_score(refs, res)[0], abs=1e-6, rel=0)
    assert cider_d(hyps, refs)[0] == pytest.approx(Cider().compute_score(refs, res)[0], abs=1e-6, rel=0)


@needs_java
def test_meteor_equals_reference():
    from pycocoevalcap.meteor.meteor import Meteor

    assert meteor_unavailable() is None
    hyps, refs = {}, {}
    for seed in range(5):
        h, r = caption_set(seed)
        hyps.update({k: ptb_tokenize(v) for k, v in h.items()})
        refs.update(tokenize_captions(r))
    ref_score, ref_items = Meteor().compute_score(refs, {k: [v] for k, v in hyps.items()})
    ours, ours_items = meteor(hyps, refs)
    assert ours == pytest.approx(ref_score, abs=1e-6, rel=0)
    assert list(ours_items.values()) == pytest.approx(ref_items, abs=1e-6, rel=0)


def test_caption_scores_keys_and_reasons(monkeypatch):
    import omnilm.metrics as metrics

    monkeypatch.setattr(metrics, "meteor_unavailable", lambda: "Java is not installed (no `java` on PATH)")
    scores = caption_scores({1: "A dog runs."}, {1: ["A dog is running.", "a dog runs"]})
    assert {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"} <= set(scores)
    assert "METEOR" not in scores and "Java" in scores["unavailable"]["METEOR"]
    if spice_unavailable() is not None:
        assert "SPICE" not in scores and "CoreNLP" in scores["unavailable"]["SPICE"]


def test_caption_scores_rejects_mismatched_ids():
    with pytest.raises(ValueError, match="same ids"):
        caption_scores({1: "a dog"}, {2: ["a dog"]}, use_meteor=False)
    with pytest.raises(ValueError, match="non-empty list"):
        caption_scores({1: "a dog"}, {1: "a dog"}, use_meteor=False)
