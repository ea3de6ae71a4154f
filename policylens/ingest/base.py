"""Shared pieces of the readers: the error type and what a format reader returns."""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any, NamedTuple

from policylens.io import InputError

# Unicode categories that carry no text: spaces (incl. U+3000), line/paragraph separators,
# controls, and format characters (zero-width space/joiners U+200B-U+200D, U+2060, BOM).
BLANK_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})
NO_TEXT = "no text after normalisation (only spaces or invisible characters)"


def has_text(text: str) -> bool:
    """True when `text` holds at least one visible character (what segmentation can make a paragraph of)."""
    return any(unicodedata.category(ch) not in BLANK_CATEGORIES for ch in text)


class IngestError(InputError):
    """A file (or one JSONL row) that could not be read; names where and why.

    `path` is always the file as given; `line` is set for a JSONL row so that
    callers can still open the file, while str() reads "corpus.jsonl:12: reason".
    """

    def __init__(self, path: str | Path, reason: str, line: int | None = None) -> None:
        super().__init__(str(path), reason, line)  # args match __init__: picklable
        self.path = str(path)
        self.reason = reason
        self.line = line

    @property
    def location(self) -> str:
        return self.path if self.line is None else f"{self.path}:{self.line}"

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"


class Extracted(NamedTuple):
    """What a format reader found: text with one logical paragraph per line."""

    text: str
    title: str | None
    meta: dict[str, Any]
