"""Character-level ROUGE-1/2/L for Chinese.

A local `evaluate` module: the hub's `rouge` uses rouge_score's default
tokenizer, which keeps only [a-z0-9] and so scores every Chinese pair 0.
Here each string becomes its characters (whitespace always dropped,
punctuation dropped by default, Latin case-folded) and rouge_score's own
n-gram and LCS scorers do the rest. Two strings with no characters left
score 0. With several references per prediction the best-F reference counts
(rouge_score's score_multi).
"""

from __future__ import annotations

import unicodedata

import datasets
import evaluate
from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_DESCRIPTION = "Character-level ROUGE-1/2/L (F, P, R) for Chinese, averaged over pairs."
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of strings.
    references: list of strings, or list of lists of strings (best-F reference counts).
    remove_punctuation: drop Unicode punctuation (category P*) before scoring (default True).
Returns:
    rouge1, rouge2, rougeL: mean F-measure; rouge1_precision, rouge1_recall, ... likewise.
Example:
    >>> m = evaluate.load("training/metrics/char_rouge")
    >>> m.compute(predictions=["工业互联网"], references=["工业互联网"])["rougeL"]
    1.0
"""


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


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CharRouge(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
        )

    def _compute(self, predictions, references, remove_punctuation: bool = True) -> dict:
        return char_rouge_scores(predictions, references, remove_punctuation)
