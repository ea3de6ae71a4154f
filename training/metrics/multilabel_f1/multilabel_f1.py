"""Multi-label precision / recall / F1 for the domain tagger.

A local `evaluate` module because the hub's metric scripts are unreachable
offline. Self-contained (numpy only) so `evaluate.load(<dir>)` can import it.

Conventions (why: dev/test splits are small and a rare label can be absent):
- Per label, an undefined ratio counts as 1.0 when it has nothing to get
  wrong (no predictions and no positives: P = R = F1 = 1.0) and 0.0 otherwise.
- `macro_*` average only the labels with at least one positive reference, so a
  split without a rare label neither rewards nor penalises the system on it;
  false positives on such a label still lower micro-F1 and exact match.
  If no label has a positive, the macro average runs over all labels.
- `none_accuracy`: among rows whose reference has no label, the share
  predicted with no label; None when there is no such row.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

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
    >>> m = evaluate.load("training/metrics/multilabel_f1")
    >>> m.compute(predictions=[[1, 0]], references=[[1, 0]], label_names=["a", "b"])["macro_f1"]
    1.0
"""


def _ratio(num: float, den: float, empty: float) -> float:
    return float(num / den) if den else empty


def multilabel_scores(predictions, references, label_names=None) -> dict:
    """The whole computation on plain arrays (also usable without evaluate)."""
    y_pred = np.asarray(predictions, dtype=np.int64)
    y_true = np.asarray(references, dtype=np.int64)
    if y_pred.ndim != 2 or y_pred.shape != y_true.shape:
        raise ValueError(f"predictions {y_pred.shape} and references {y_true.shape} must be equal 2-D shapes")
    n, n_labels = y_true.shape
    names = list(label_names) if label_names is not None else [f"label_{i}" for i in range(n_labels)]
    if len(names) != n_labels:
        raise ValueError(f"{len(names)} label names for {n_labels} label columns")
    y_pred, y_true = y_pred > 0, y_true > 0
    tp = (y_pred & y_true).sum(0)
    fp = (y_pred & ~y_true).sum(0)
    fn = (~y_pred & y_true).sum(0)
    per_label = {}
    for j, name in enumerate(names):
        nothing = fp[j] == 0 and fn[j] == 0 and tp[j] == 0  # nothing to find, nothing flagged
        p = _ratio(tp[j], tp[j] + fp[j], 1.0 if nothing else 0.0)
        r = _ratio(tp[j], tp[j] + fn[j], 1.0 if nothing else 0.0)
        f = _ratio(2 * tp[j], 2 * tp[j] + fp[j] + fn[j], 1.0 if nothing else 0.0)
        per_label[name] = {"precision": p, "recall": r, "f1": f, "support": int(tp[j] + fn[j])}
    present = [name for name in names if per_label[name]["support"] > 0] or names
    macro = {k: float(np.mean([per_label[name][k] for name in present])) if present else 0.0 for k in ("precision", "recall", "f1")}
    TP, FP, FN = int(tp.sum()), int(fp.sum()), int(fn.sum())
    nothing = TP + FP + FN == 0
    empty_rows = ~y_true.any(1)
    none_support = int(empty_rows.sum())
    return {
        "per_label": per_label,
        "macro_f1": macro["f1"],
        "macro_precision": macro["precision"],
        "macro_recall": macro["recall"],
        "micro_f1": _ratio(2 * TP, 2 * TP + FP + FN, 1.0 if nothing else 0.0),
        "micro_precision": _ratio(TP, TP + FP, 1.0 if nothing else 0.0),
        "micro_recall": _ratio(TP, TP + FN, 1.0 if nothing else 0.0),
        "exact_match": float((y_pred == y_true).all(1).mean()) if n else 0.0,
        "none_accuracy": float((~y_pred[empty_rows].any(1)).mean()) if none_support else None,
        "none_support": none_support,
        "n": int(n),
    }


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
