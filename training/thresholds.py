"""Per-label decision thresholds and temperature calibration, fitted on dev.

Rare labels get skewed scores from class weighting, so one global 0.5 cut is
rarely best; each label gets its own threshold and temperature.
"""

from __future__ import annotations

import numpy as np

from policylens.metrics.multilabel import binary_f1

DEFAULT_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)
T_MIN, T_MAX = 0.05, 20.0


def tune_thresholds(y_true: np.ndarray, scores: np.ndarray, grid: np.ndarray | None = None) -> np.ndarray:
    """Per-label threshold (predict `score >= t`) maximising dev F1.

    Ties go to the threshold closest to 0.5 (least surprising); a label with no
    positive on dev keeps 0.5, since any threshold there is fitted to nothing.
    """
    y = np.asarray(y_true) > 0
    scores = np.asarray(scores, dtype=float)
    grid = DEFAULT_GRID if grid is None else np.asarray(grid, dtype=float)
    thresholds = np.full(y.shape[1], 0.5)
    for j in range(y.shape[1]):
        if not y[:, j].any():
            continue
        f1s = binary_f1(y[:, j][None, :], scores[:, j][None, :] >= grid[:, None])
        best = np.flatnonzero(np.isclose(f1s, f1s.max()))
        thresholds[j] = grid[best[np.argmin(np.abs(grid[best] - 0.5))]]
    return thresholds


def apply_thresholds(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Multi-hot int predictions: 1 where `score >= threshold` of its label."""
    return (np.asarray(scores) >= np.asarray(thresholds)[None, :]).astype(int)


def fit_temperature(logits: np.ndarray, y_true: np.ndarray, max_iter: int = 100) -> np.ndarray:
    """Per-label temperature T minimising BCE of sigmoid(logits / T), clamped to [0.05, 20].

    Optimises log T with LBFGS so T stays positive; one scalar per label keeps
    the ranking (and so AUC) of each label unchanged.
    """
    import torch

    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(y_true), dtype=torch.float64)
    log_t = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return np.clip(log_t.detach().exp().numpy(), T_MIN, T_MAX)


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 10) -> float:
    """ECE over all (row, label) cells as binary forecasts, equal-width bins.

    Sum over bins of |mean prob - positive rate| weighted by the bin's share of cells.
    """
    p = np.asarray(probs, dtype=float).ravel()
    y = np.asarray(y_true, dtype=float).ravel()
    if p.size == 0:
        return 0.0
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(ece)
