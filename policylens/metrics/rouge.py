"""Character-level ROUGE-1/2/L for Chinese: the one implementation.

The hub's `rouge` uses rouge_score's default tokenizer, which keeps only
[a-z0-9] and so scores every Chinese pair 0. Here each string becomes its
characters (whitespace always dropped, punctuation dropped by default, Latin
case-folded) and rouge_score's own n-gram and LCS scorers do the rest. Two
strings with no characters left score 0. With several references per
prediction the best-F reference counts (rouge_score's score_multi).
The `char_rouge` evaluate module and the summariser's oracle both use it.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


class CharTokenizer:
    """rouge_score tokenizer interface: `tokenize(text) -> list[str]` of characters."""

    def __init__(self, remove_punctuation: bool = True) -> None:
        self.remove_punctuation = remove_punctuation

    def tokenize(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFKC", text).casefold()  # full-width Latin/digits -> ASCII
        return [
            c
            for c in text
            if not c.isspace() and not (self.remove_punctuation and unicodedata.category(c).startswith("P"))
        ]


def char_rouge_scores(predictions, references, remove_punctuation: bool = True) -> dict:
    """Mean character ROUGE over (prediction, reference(s)) pairs."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=CharTokenizer(remove_punctuation))
    totals = {f"{t}{s}": 0.0 for t in ROUGE_TYPES for s in ("", "_precision", "_recall")}
    for prediction, reference in zip(predictions, references):
        if isinstance(reference, str):
            scores = scorer.score(reference, prediction)
        else:
            scores = scorer.score_multi(list(reference), prediction)
        for t in ROUGE_TYPES:
            totals[t] += scores[t].fmeasure
            totals[f"{t}_precision"] += scores[t].precision
            totals[f"{t}_recall"] += scores[t].recall
    n = max(len(predictions), 1)
    return {key: value / n for key, value in totals.items()}


@lru_cache(maxsize=1)
def _default_tokenizer() -> CharTokenizer:
    return CharTokenizer(remove_punctuation=True)


def rouge_tokens(text: str) -> list[str]:
    """The characters char_rouge scores, so an oracle optimises the reported metric."""
    return _default_tokenizer().tokenize(text)


def ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def ngram_f1(candidate: Counter, reference: Counter) -> float:
    """ROUGE-N F of two n-gram counters (what rouge_score computes for one pair)."""
    overlap = sum((candidate & reference).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / sum(candidate.values()), overlap / sum(reference.values())
    return 2 * precision * recall / (precision + recall)
