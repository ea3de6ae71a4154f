"""Multi-label precision / recall / F1 for the domain tagger.

A local `evaluate` module because the hub's metric scripts are unreachable
offline; it wraps policylens.metrics.multilabel, the one implementation.

Conventions (undefined ratios, labels absent from the references): see
policylens/metrics/multilabel.py.
"""

from __future__ import annotations

import datasets
import evaluate

from policylens.metrics.multilabel import multilabel_scores

_DESCRIPTION = "Per-label and macro/micro precision, recall and F1, exact match and no-label accuracy for multi-hot labels."
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of multi-hot int lists (one 0/1 per label).
    references: list of multi-hot int lists, same shape.
    label_names: optional list of label names (default label_0, label_1, ...).
Returns:
    per_label: {name: {precision, recall, f1, support}}; macro_f1, macro_precision,
    macro_recall, micro_f1, micro_precision, micro_recall, exact_match,
    none_accuracy (None without no-label rows), none_support, n.
Example:
    >>> m = evaluate.load("policylens/metrics/multilabel_f1")
    >>> m.compute(predictions=[[1, 0]], references=[[1, 0]], label_names=["a", "b"])["macro_f1"]
    1.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MultilabelF1(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int32")),
                    "references": datasets.Sequence(datasets.Value("int32")),
                }
            ),
        )

    def _compute(self, predictions, references, label_names=None) -> dict:
        return multilabel_scores(predictions, references, label_names)
