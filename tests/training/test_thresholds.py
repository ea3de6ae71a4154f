"""Per-label thresholds and temperature scaling on synthetic scores."""

from __future__ import annotations

import numpy as np
import pytest

from policylens.calibration import calibrate
from training.thresholds import (
    apply_thresholds,
    expected_calibration_error,
    fit_temperature,
    tune_thresholds,
)


def _bce(probs: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(probs, 1e-12, 1 - 1e-12)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def test_tune_recovers_best_threshold() -> None:
    y = np.array([[0, 1, 0], [0, 0, 0], [0, 1, 0], [1, 0, 0], [1, 1, 0], [1, 0, 0]])
    scores = np.array(
        [[0.10, 0.80, 0.9], [0.20, 0.75, 0.9], [0.30, 0.70, 0.9], [0.32, 0.20, 0.9], [0.60, 0.65, 0.9], [0.90, 0.10, 0.9]]
    )
    t = tune_thresholds(y, scores)
    # label 0: F1 = 1 only for t in (0.30, 0.32]; the closest grid point to 0.5 is 0.32
    assert t[0] == pytest.approx(0.32)
    # label 1: best F1 6/7 on the plateau (0.20, 0.65]; the tie goes to 0.5
    assert t[1] == pytest.approx(0.5)
    # label 2: no positives on dev -> 0.5
    assert t[2] == 0.5
    assert apply_thresholds(scores, t)[:, 0].tolist() == [0, 0, 0, 1, 1, 1]


def test_custom_grid_and_apply_is_inclusive() -> None:
    y = np.array([[1], [0], [1], [0]])
    scores = np.array([[0.9], [0.6], [0.7], [0.1]])
    assert tune_thresholds(y, scores, grid=[0.2, 0.65, 0.8]).tolist() == [0.65]
    assert apply_thresholds(np.array([[0.5, 0.49]]), np.array([0.5, 0.5])).tolist() == [[1, 0]]
    assert apply_thresholds(scores, np.array([0.65])).dtype.kind == "i"


def test_temperature_scaling_fixes_miscalibration() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0.0, 2.0, size=(4000, 2))
    y = (rng.random(true_logits.shape) < 1 / (1 + np.exp(-true_logits))).astype(float)
    logits = true_logits * np.array([4.0, 0.25])  # over-confident, under-confident
    temperature = fit_temperature(logits, y)
    assert temperature[0] == pytest.approx(4.0, rel=0.2)
    assert temperature[1] == pytest.approx(0.25, rel=0.2)
    before, after = calibrate(logits, np.ones(2)), calibrate(logits, temperature)
    assert _bce(after, y) < _bce(before, y) - 0.02
    assert expected_calibration_error(after, y) < expected_calibration_error(before, y)


def test_temperature_is_clamped() -> None:
    # separable with tiny logits: BCE keeps falling as T -> 0; labels unrelated to the sign: T -> inf
    low = fit_temperature(np.array([[0.01], [-0.01]]), np.array([[1.0], [0.0]]))
    high = fit_temperature(np.array([[10.0], [10.0], [-10.0], [-10.0]]), np.array([[1.0], [0.0], [1.0], [0.0]]))
    assert low[0] == pytest.approx(0.05) and high[0] == pytest.approx(20.0)


def test_calibrate_and_ece_known_values() -> None:
    assert calibrate(np.array([[0.0, 2.0]]), np.array([1.0, 2.0]))[0].tolist() == pytest.approx([0.5, 1 / (1 + np.e**-1)])
    assert expected_calibration_error(np.full(10, 0.5), np.array([1, 0] * 5)) == pytest.approx(0.0)
    assert expected_calibration_error(np.full((2, 2), 0.9), np.zeros((2, 2))) == pytest.approx(0.9)
    # two bins: 0.2 with 0/2 positives (gap 0.2), 1.0 (last bin inclusive) with 2/2 (gap 0)
    assert expected_calibration_error(np.array([0.2, 0.2, 1.0, 1.0]), np.array([0, 0, 1, 1])) == pytest.approx(0.1)
