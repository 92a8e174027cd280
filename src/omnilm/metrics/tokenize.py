"""Java-free PTB-style caption tokenizer, matching pycocoevalcap's ``PTBTokenizer`` on ordinary captions.

pycocoevalcap runs Stanford CoreNLP 3.4.1 (``PTBTokenizer -preserveLines -lowerCase``) and then drops the
punctuation tokens ``'' ' `` ` . ? ! , : - -- ... ;``. This module reproduces that output in pure Python:
contractions are split (``don't`` -> ``do n't``, ``can't`` -> ``ca n't``, ``dog's`` -> ``dog 's``), quotes,
commas, full stops, colons and dashes disappear, brackets become ``-lrb-``/``-rrb-``/``-lsb-``/... (kept: the
reference compares its punctuation list case-sensitively after lower-casing), ``$``, ``%``, ``#``, ``&``
become tokens of their own, and abbreviations (``mr.``, ``st.``, ``u.s.``, ``e.g.``) keep their full stop.
Exotic input (URLs, e-mail addresses, SGML tags) is not modelled. One reference quirk cannot be: CoreNLP
reads all captions as one text, so a caption ending in a single letter and a full stop ("plan b.") keeps
the stop unless the next caption in the batch starts with a capital; here the stop is always dropped.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence

# Tokens that pycocoevalcap removes after running the Java tokenizer (case-sensitive, as there).
REMOVED_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}

# Abbreviations that keep their full stop wherever they stand (CoreNLP's titles and company/etc. forms).
_ABBREVIATIONS = frozenset(
    """mr mrs ms miss dr drs prof profs sen sens rep reps atty attys lt col gen messrs gov govs adm rev maj sgt
    cpl pvt mt capt st ste ave pres lieut hon brig cmdr comdr pfc spc supt supts det vs alex wm jos cie cf
    etc al seq inc co cos corp ltd plc bancorp dept bhd assn univ intl sys jr sr bros blvd rd esq
    jan feb mar apr jun jul aug sep sept oct nov dec""".split()
)
# Keep the full stop only when a number follows ("no. 5").
_ABBREVIATIONS_BEFORE_NUMBER = frozenset(["no", "nos", "art", "fig", "p", "pp"])
_ACRONYM = re.compile(r"[^\W\d_](?:\.[^\W\d_])+", re.UNICODE)  # u.s, e.g, p.m (the final "." is separate)

# Colloquial forms CoreNLP splits in two (lower-cased here; the split keeps the input's case).
_SPLIT_WORDS = {"cannot": 3, "gonna": 3, "gotta": 3, "wanna": 3, "lemme": 3, "gimme": 3}
_CONTRACTION = re.compile(r"(?i)(?:n't|'s|'m|'re|'ve|'d|'ll)$")
_LETTER = r"[^\W\d_]"

# One pass over the text; alternatives are tried in order at each position.
_SCANNER = re.compile(
    rf"""
    (?P<space>\s+)
  | (?P<dots>\.{{2,}})
  | (?P<dashes>-{{2,}})
  | (?P<bangs>[!?]+)
  | (?P<tag>[#@]{_LETTER}\w*)
  | (?P<quote_word>'(?:cause|em|n'|n|til|[0-9]0s)(?!\w))
  | (?P<quote_t>'t(?=(?:is|was)\b))
  | (?P<clitic>(?i:'(?:s|m|re|ve|d|ll))(?!\w))
  | (?P<word>(?:\.(?=\d))?\w+(?:(?:[-&/.]|(?<=\d)[,:](?=\d)|(?<={_LETTER})'(?={_LETTER}))\w+)*)
  | (?P<other>.)
    """,
    re.VERBOSE | re.UNICODE,
)

_NORMALISE = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "--",
                            "\u2014": "--", "\u2026": "...", "\u00a0": " ", "\n": " ", "\r": " ", "\t": " "})


def _split_word(word: str) -> list[str]:
    """Split clitics off one word: ``wouldn't`` -> ``would n't``, ``i'd've`` -> ``i 'd 've``."""
    lower = word.lower()
    if lower in _SPLIT_WORDS:
        cut = _SPLIT_WORDS[lower]
        return [word[:cut], word[cut:]]
    if lower.startswith("y'") and len(word) > 2:  # y'all, y'know
        return [word[:2], *_split_word(word[2:])]
    suffixes: list[str] = []
    while (match := _CONTRACTION.search(word)) and match.start() > 0:
        suffixes.insert(0, match.group(0))
        word = word[: match.start()]
    return [word, *suffixes]


def _raw_tokens(text: str) -> list[str]:
    """CoreNLP-style tokens of one line, before lower-casing and punctuation removal."""
    matches = [m for m in _SCANNER.finditer(text.translate(_NORMALISE)) if m.lastgroup != "space"]
    tokens: list[str] = []
    consumed: set[int] = set()  # indices of full stops taken by an abbreviation
    for index, match in enumerate(matches):
        kind, value = match.lastgroup, match.group(0)
        if index in consumed:
            continue
        if kind == "dots":
            tokens.extend(["..."] if len(value) > 2 else [".", "."])
        elif kind == "dashes":
            tokens.append("--")
        elif kind == "word":
            tokens.extend(_split_word(value))
            if _keeps_full_stop(value, matches, index):
                tokens[-1] += "."
                consumed.add(index + 1)
        elif kind == "other" and value in _BRACKETS:
            tokens.append(_BRACKETS[value])
        elif kind == "other" and value == '"':
            tokens.append("``")
        else:
            tokens.append(value)
    return tokens


def _keeps_full_stop(word: str, matches: list[re.Match], index: int) -> bool:
    """Whether the "." right after ``word`` belongs to it (an abbreviation) rather than ending a sentence."""
    if index + 1 >= len(matches):
        return False
    stop = matches[index + 1]
    if stop.group(0) != "." or stop.start() != matches[index].end():
        return False
    after = matches[index + 2].group(0) if index + 2 < len(matches) else ""
    lower = word.lower()
    if _ACRONYM.fullmatch(word) or lower in _ABBREVIATIONS:
        return True
    if len(word) == 1 and word.isalpha():  # an initial, unless the caption ends or a new sentence starts
        return bool(after) and not after[:1].isupper()
    if lower in _ABBREVIATIONS_BEFORE_NUMBER:
        return after[:1].isdigit()
    return False


def ptb_tokenize(caption: str) -> str:
    """Tokenize one caption as pycocoevalcap does: lower-case tokens joined by single spaces."""
    tokens = (token.lower() for token in _raw_tokens(caption))
    return " ".join(t for t in tokens if t not in REMOVED_PUNCTUATION)


def tokenize_captions(captions: Mapping[Hashable, Sequence[str]]) -> dict[Hashable, list[str]]:
    """Tokenize ``{id: [caption, ...]}`` -> ``{id: [tokenized caption, ...]}`` (pycocoevalcap's layout)."""
    return {key: [ptb_tokenize(c) for c in values] for key, values in captions.items()}
