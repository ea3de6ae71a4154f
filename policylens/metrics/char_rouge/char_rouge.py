"""Character-level ROUGE-1/2/L for Chinese.

A local `evaluate` module (the hub's `rouge` scores every Chinese pair 0);
it wraps policylens.metrics.rouge, the one implementation.
"""

from __future__ import annotations

import datasets
import evaluate

from policylens.metrics.rouge import char_rouge_scores

_DESCRIPTION = "Character-level ROUGE-1/2/L (F, P, R) for Chinese, averaged over pairs."
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of strings.
    references: list of strings, or list of lists of strings (best-F reference counts).
    remove_punctuation: drop Unicode punctuation (category P*) before scoring (default True).
Returns:
    rouge1, rouge2, rougeL: mean F-measure; rouge1_precision, rouge1_recall, ... likewise.
Example:
    >>> m = evaluate.load("policylens/metrics/char_rouge")
    >>> m.compute(predictions=["工业互联网"], references=["工业互联网"])["rougeL"]
    1.0
"""


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
