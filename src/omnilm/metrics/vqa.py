"""VQAv2 accuracy with the official answer normalisation (the VQA challenge's ``vqaEval.py`` rules).

Normalisation, in the official order:
1. newlines/tabs become spaces; surrounding whitespace is stripped;
2. punctuation: each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted when it touches a space
   somewhere in the answer, or when the answer contains a digit-comma-digit group; otherwise it becomes a
   space. Then full stops not followed by a digit are deleted (at most 32, as the reference's ``re.sub``
   call passes ``re.UNICODE`` as the count). Apostrophes and colons stay;
3. lower-case, split on whitespace, number words ``none``/``zero``..``ten`` become digits, the articles
   ``a an the`` are dropped, and apostrophe-less contractions are restored (``dont`` -> ``don't``).

Accuracy: for each of the ten leave-one-annotator-out subsets of the answers, ``min(1, matches / 3)``;
the mean over the subsets. With ten answers: 0 matches -> 0, 1 -> 0.3, 2 -> 0.6, 3 -> 0.9, 4+ -> 1.
With a single reference answer (datasets such as easy-VQA or GQA) the leave-one-out subset would be
empty, so the score is 1.0 for a match after normalisation and 0.0 otherwise.

The official script skips normalisation when all ten human answers are identical, because the released
answers are already normalised and the challenge server normalises submissions; here the prediction and
the answers are always normalised, which gives the server's numbers for raw model output.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?",
                "!"]
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
_FULL_STOP = re.compile(r"\.(?!\d)")
_FULL_STOP_LIMIT = 32
_ARTICLES = frozenset(["a", "an", "the"])
_NUMBER_WORDS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
_NUMBER_WORDS["none"] = "0"

# Apostrophe-less spelling -> official spelling, written as "from:to" pairs. The official table also has
# keys with capitals ("Im", "Ive", "Id've") that never match lower-cased words: they are left out, so
# "im" stays "im" exactly as there. Its one reversed entry ("somebody'd" -> "somebodyd") is kept.
_CONTRACTIONS = dict(
    pair.split(":")
    for pair in """
aint:ain't arent:aren't cant:can't couldve:could've couldnt:couldn't couldn'tve:couldn't've
couldnt've:couldn't've didnt:didn't doesnt:doesn't dont:don't hadnt:hadn't hadnt've:hadn't've
hadn'tve:hadn't've hasnt:hasn't havent:haven't hed:he'd hed've:he'd've he'dve:he'd've hes:he's howd:how'd
howll:how'll hows:how's isnt:isn't itd:it'd itd've:it'd've it'dve:it'd've itll:it'll
let's:let's maam:ma'am mightnt:mightn't mightnt've:mightn't've mightn'tve:mightn't've mightve:might've
mustnt:mustn't mustve:must've neednt:needn't notve:not've oclock:o'clock oughtnt:oughtn't
ow's'at:'ow's'at 'ows'at:'ow's'at 'ow'sat:'ow's'at shant:shan't shed've:she'd've she'dve:she'd've
she's:she's shouldve:should've shouldnt:shouldn't shouldnt've:shouldn't've shouldn'tve:shouldn't've
somebody'd:somebodyd somebodyd've:somebody'd've somebody'dve:somebody'd've somebodyll:somebody'll
somebodys:somebody's someoned:someone'd someoned've:someone'd've someone'dve:someone'd've
someonell:someone'll someones:someone's somethingd:something'd somethingd've:something'd've
something'dve:something'd've somethingll:something'll thats:that's thered:there'd thered've:there'd've
there'dve:there'd've therere:there're theres:there's theyd:they'd theyd've:they'd've they'dve:they'd've
theyll:they'll theyre:they're theyve:they've twas:'twas wasnt:wasn't wed've:we'd've we'dve:we'd've
weve:we've werent:weren't whatll:what'll whatre:what're whats:what's whatve:what've whens:when's
whered:where'd wheres:where's whereve:where've whod:who'd whod've:who'd've who'dve:who'd've wholl:who'll
whos:who's whove:who've whyll:why'll whyre:why're whys:why's wont:won't wouldve:would've
wouldnt:wouldn't wouldnt've:wouldn't've wouldn'tve:wouldn't've yall:y'all yall'll:y'all'll
y'allll:y'all'll yall'd've:y'all'd've y'alld've:y'all'd've y'all'dve:y'all'd've youd:you'd
youd've:you'd've you'dve:you'd've youll:you'll youre:you're youve:you've
""".split()
)


def _strip_punctuation(text: str) -> str:
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        touches_space = f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if touches_space or delete_all else " ")
    return _FULL_STOP.sub("", out, count=_FULL_STOP_LIMIT)


def _digits_articles_contractions(text: str) -> str:
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def normalize_vqa_answer(answer: str) -> str:
    """The official VQA normalisation of one answer ("Two dogs." -> "2 dogs")."""
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    return _digits_articles_contractions(_strip_punctuation(text))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQAv2 accuracy of one prediction against the human answers (usually ten)."""
    if not answers:
        raise ValueError("vqa_accuracy needs at least one reference answer; got an empty list")
    predicted = normalize_vqa_answer(prediction)
    normalized = [normalize_vqa_answer(a) for a in answers]
    if len(normalized) == 1:  # leaving out the only answer leaves nothing: score the match itself
        return float(normalized[0] == predicted)
    matches = sum(a == predicted for a in normalized)
    # Leaving out annotator i removes one match exactly when annotator i agreed with the prediction.
    total = sum(min(1.0, (matches - (a == predicted)) / 3) for a in normalized)
    return total / len(normalized)
