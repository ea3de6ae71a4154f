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


@lru_cache(maxsize=1)
def _word_tokenizer():
    import logging

    import jieba  # the standard Chinese word segmenter; its dictionary ships in the package

    jieba.setLogLevel(logging.WARNING)  # not its "Building prefix dict…" lines in every log
    return jieba.Tokenizer()


def words(text: str) -> list[str]:
    """The words of a normalised text (jieba, default dictionary), lowercased, without spaces.

    Character n-grams cannot tell 链 in 产业链 from 区块链's; words can. The lexical
    model reads both.
    """
    return [w for w in _word_tokenizer().lcut(text.lower()) if w.strip()]


def word_ngrams(text: str, ngram_range: tuple[int, int]) -> list[str]:
    """Word n-grams of a normalised text, each a space-joined run of `words`."""
    tokens = words(text)
    low, high = ngram_range
    return [" ".join(tokens[i : i + n]) for n in range(low, high + 1) for i in range(len(tokens) - n + 1)]
