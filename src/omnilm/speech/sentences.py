"""Streamed text cut into sentences, so each can be spoken as soon as it is complete."""

from __future__ import annotations

import re

# a sentence ends at . ! ? … (and closing quotes or brackets) followed by white space, or at a line break
_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+|\n+")
_SPEAKABLE = re.compile(r"\w")


class SentenceSplitter:
    """`feed(piece)` returns the sentences that piece completed; `flush()` the rest (once the text ends)."""

    def __init__(self) -> None:
        self.buffer = ""

    def feed(self, piece: str) -> list[str]:
        self.buffer += piece
        sentences, start = [], 0
        for match in _END.finditer(self.buffer):
            sentences.append(self.buffer[start : match.end()])
            start = match.end()
        self.buffer = self.buffer[start:]
        return [s.strip() for s in sentences if _SPEAKABLE.search(s)]

    def flush(self) -> list[str]:
        rest, self.buffer = self.buffer.strip(), ""
        return [rest] if _SPEAKABLE.search(rest) else []
