"""Metrics: one multi-label F1 (multilabel.py) and one character ROUGE (rouge.py).

Each is also an `evaluate` metric in a directory `<name>/<name>.py` that wraps
it; `evaluate.load(<dir>)` imports it from disk, so it works with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from policylens.metrics.multilabel import binary_f1, multilabel_scores

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("multilabel_f1", "char_rouge")


def metric_dir(name: str) -> Path:
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; choose from {METRIC_NAMES}")
    return METRICS_DIR / name


def load_metric(name: str, **kwargs):
    """`evaluate.load` of a local metric module ("multilabel_f1" or "char_rouge"); kwargs go to evaluate.load.

    `import evaluate` is deferred to here: it pulls in transformers and torch (seconds).
    """
    import evaluate

    return evaluate.load(str(metric_dir(name)), **kwargs)


def multilabel_report(y_true, y_pred, label_names: Sequence[str]) -> dict:
    """Per-label and macro/micro scores of multi-hot arrays (the multilabel_f1 metric's numbers)."""
    return multilabel_scores(y_pred, y_true, list(label_names))


def markdown_table(reports: dict[str, dict], label_names: Sequence[str]) -> str:
    """Systems side by side: per-label F1 rows, then macro-F1, micro-F1 and exact match."""
    systems = list(reports)
    lines = ["| metric | " + " | ".join(systems) + " |", "|---|" + "---:|" * len(systems)]
    for name in label_names:
        support = next((r["per_label"][name]["support"] for r in reports.values() if name in r["per_label"]), None)
        cells = [f"{r['per_label'][name]['f1']:.3f}" if name in r["per_label"] else "-" for r in reports.values()]
        lines.append(f"| F1 {name} (n={support}) | " + " | ".join(cells) + " |")
    for key, title in (("macro_f1", "macro-F1"), ("micro_f1", "micro-F1"), ("exact_match", "exact match")):
        lines.append(f"| {title} | " + " | ".join(f"{r[key]:.3f}" for r in reports.values()) + " |")
    return "\n".join(lines)


def paired_bootstrap_f1_change(
    y_true: np.ndarray, old_pred: np.ndarray, new_pred: np.ndarray, label_names: Sequence[str],
    n_resamples: int = 1000, confidence: float = 0.9, seed: int = 13,
) -> dict[str, tuple[float, float]]:
    """Interval of (new F1 - old F1) per label and for macro-F1, resampling the same rows for both models.

    With ~60 positives per domain a drop of 0.03 can be noise; the interval says how much.
    """
    y_true, old_pred, new_pred = (np.asarray(a, dtype=bool) for a in (y_true, old_pred, new_pred))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y_true), size=(n_resamples, len(y_true)))

    truth = y_true[idx].swapaxes(1, 2)  # (resamples, labels, rows)
    diff = binary_f1(truth, new_pred[idx].swapaxes(1, 2)) - binary_f1(truth, old_pred[idx].swapaxes(1, 2))
    lo, hi = (1 - confidence) / 2, 1 - (1 - confidence) / 2
    out = {label: (float(np.quantile(diff[:, j], lo)), float(np.quantile(diff[:, j], hi)))
           for j, label in enumerate(label_names)}
    macro = diff.mean(axis=1)
    out["macro_f1"] = (float(np.quantile(macro, lo)), float(np.quantile(macro, hi)))
    return out
