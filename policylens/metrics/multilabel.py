"""Multi-label precision / recall / F1 for the domain tagger.

The one implementation: the `multilabel_f1` evaluate module, threshold tuning,
early stopping, the gate and the benchmarks all call it.

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

import numpy as np


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


def binary_f1(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """F1 of boolean arrays along the last axis but one: [..., n] -> [...]; 0 where nothing is there."""
    y_true, y_pred = np.asarray(y_true, dtype=bool), np.asarray(y_pred, dtype=bool)
    tp = (y_pred & y_true).sum(axis=-1)
    denom = y_pred.sum(axis=-1) + y_true.sum(axis=-1)
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def macro_f1(y_true, y_pred) -> float:
    """The reported macro-F1 (labels without a positive reference are left out)."""
    return multilabel_scores(y_pred, y_true)["macro_f1"]
