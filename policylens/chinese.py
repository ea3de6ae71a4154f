"""Text normalisation for the models: Traditional -> Simplified, whitespace cleanup.

The original text is always kept alongside for display; only models read this.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_SPACES = re.compile(r"[ \t\u00a0\u3000\u2002-\u200b\ufeff]+")


@lru_cache(maxsize=1)
def _t2s():
    import opencc  # the official OpenCC binding; its dictionaries ship in the wheel

    return opencc.OpenCC("t2s")


def to_simplified(text: str) -> str:
    """Convert Traditional characters (and phrases) to Simplified Chinese."""
    return _t2s().convert(text) if text else text


def clean_spaces(text: str) -> str:
    """Collapse runs of (full-width) spaces and trim, as scraped policy pages are full of them."""
    return _SPACES.sub(" ", text).strip()


def normalize(text: str) -> str:
    """What every model sees: Simplified, NFC, single spaces."""
    return clean_spaces(to_simplified(unicodedata.normalize("NFC", text)))
