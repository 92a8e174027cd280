"""Multiple-choice answer extraction (ScienceQA, MMMU, video QA) from a free-form reply.

The rules of MMMU's ``parse_multi_choice_response``: surrounding punctuation stripped; a letter in
parentheses ``(B)`` wins, else a letter standing alone `` B ``; else, for replies longer than five words,
an option's text found in the reply; with several candidates the one mentioned last. Where MMMU then picks
a random letter, a reply opening with a letter and a full stop or parenthesis (``B. bananas``, LLaVA's
ScienceQA rule) picks that letter, and anything else picks none ("": scored wrong), so scores are
reproducible.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

LETTERS = string.ascii_uppercase


def option_letters(options: Sequence[str]) -> list[str]:
    if len(options) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options, got {len(options)}")
    return list(LETTERS[: len(options)])


def format_options(options: Sequence[str]) -> str:
    """"A. first\\nB. second" (the layout LLaVA, lmms-eval and MMMU prompts use)."""
    return "\n".join(f"{letter}. {option}" for letter, option in zip(option_letters(options), options))


def parse_choice(reply: str, options: Sequence[str]) -> str:
    """The letter a reply picks among `options`, or "" when it picks none."""
    letters = option_letters(options)
    text = reply
    for mark in ",.!?;:'":
        text = text.strip(mark)
    text = f" {text} "
    found = [(text.rfind(f"({letter})"), letter) for letter in letters if f"({letter})" in text]
    if not found:
        found = [(text.rfind(f" {letter} "), letter) for letter in letters if f" {letter} " in text]
    if not found and len(text.split()) > 5:
        lowered = text.lower()
        found = [(lowered.rfind(option.lower()), letter) for letter, option in zip(letters, options)
                 if option.lower() in lowered]
    if found:
        return max(found)[1]
    head = reply.strip()
    return head[0] if len(head) >= 2 and head[0] in letters and head[1] in ".)" else ""
