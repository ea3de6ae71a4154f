"""Logits to calibrated probabilities: per-label temperature, then a sigmoid."""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Overflow-free: a sharp temperature makes logits of several hundred, where exp(-x) overflows."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def calibrate(logits: np.ndarray, temperature: np.ndarray) -> np.ndarray:
    """Calibrated probabilities sigmoid(logits / T), one temperature per label."""
    return sigmoid(np.asarray(logits, dtype=float) / np.asarray(temperature, dtype=float))
