"""Choosing how the ensemble combines its two models, and its thresholds, on out-of-fold predictions.

The 600-row dev split is too small to tune on (its thresholds cost 0.015 macro-F1
on unseen documents), so the choice comes from OOF scores over all labelled data
(training/cv.py) and is stored as a recipe (`data/tagger_stack.json`) that every
training run applies. The default combiner is the mean of the two probabilities
(nothing to fit); with a logistic stack, a label the recipe does not know (a user's
new domain) is fitted on the run's dev split instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policylens.io import InputError, write_json
from policylens.metrics.multilabel import binary_f1
from policylens.paths import DATA_DIR
from policylens.tagger.ensemble import COMBINES, Combiner, ProbabilityMean, Stack
from training.thresholds import tune_thresholds

STACK_RECIPE_PATH = DATA_DIR / "tagger_stack.json"
RECIPE_FORMAT = "policylens-stack-recipe/1"


@dataclass
class Recipe:
    """How to combine (`mean` or `logistic`) and, per label, the thresholds (and a logistic stack's weights)."""

    combine: str = "logistic"
    labels: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.combine not in COMBINES:
            raise ValueError(f"unknown combine {self.combine!r}; choose from {list(COMBINES)}")


def fit_stack(encoder_logits: np.ndarray, lexical_logits: np.ndarray, y: np.ndarray, C: float = 1.0) -> Stack:
    """One logistic regression per label on (encoder logit, lexical logit)."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y) > 0
    weights: dict[str, list[float]] = {"encoder": [], "lexical": [], "bias": []}
    for j in range(y.shape[1]):
        X = np.column_stack([encoder_logits[:, j], lexical_logits[:, j]]).astype(np.float64)
        if y[:, j].all() or not y[:, j].any():  # nothing to separate: keep the encoder as it is
            weights["encoder"].append(1.0)
            weights["lexical"].append(0.0)
            weights["bias"].append(0.0)
            continue
        model = LogisticRegression(C=C, max_iter=1000).fit(X, y[:, j])
        weights["encoder"].append(float(model.coef_[0, 0]))
        weights["lexical"].append(float(model.coef_[0, 1]))
        weights["bias"].append(float(model.intercept_[0]))
    return Stack(**weights)


def crossfit_stack_probs(encoder_logits: np.ndarray, lexical_logits: np.ndarray, y: np.ndarray,
                         folds: np.ndarray, combine: str = "logistic") -> np.ndarray:
    """Each fold's combined probabilities from a combiner fitted on the other folds only (an honest CV
    estimate); the mean needs no fitting."""
    if combine == "mean":
        return ProbabilityMean(encoder_logits.shape[1]).probs(encoder_logits, lexical_logits).astype(np.float64)
    probs = np.zeros(encoder_logits.shape, dtype=np.float64)
    for fold in np.unique(folds):
        held = folds == fold
        stack = fit_stack(encoder_logits[~held], lexical_logits[~held], y[~held])
        probs[held] = stack.probs(encoder_logits[held], lexical_logits[held])
    return probs


def choose_thresholds(y: np.ndarray, probs: np.ndarray, folds: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Per label, a tuned threshold only where it beats a flat 0.5 by more than the fold-to-fold spread.

    Each fold's threshold is tuned on the other folds and scored on it, so the gain
    is measured on rows the tuning never saw.
    """
    y = np.asarray(y) > 0
    thresholds = np.full(y.shape[1], 0.5)
    evidence = []
    for j in range(y.shape[1]):
        gains = []
        for fold in np.unique(folds):
            held = folds == fold
            if not y[held, j].any():
                continue
            t = tune_thresholds(y[~held][:, [j]], probs[~held][:, [j]])[0]
            f1_tuned, f1_flat = binary_f1(y[held, j][None, :], np.stack([probs[held, j] >= t, probs[held, j] >= 0.5]))
            gains.append(float(f1_tuned - f1_flat))
        gain, spread = float(np.mean(gains)), float(np.std(gains, ddof=1)) if len(gains) > 1 else float("inf")
        tuned = float(tune_thresholds(y[:, [j]], probs[:, [j]])[0])
        if gain > spread:
            thresholds[j] = tuned
        evidence.append({"tuned": tuned, "mean_gain": round(gain, 4), "spread": round(spread, 4),
                         "kept": float(thresholds[j])})
    return thresholds, evidence


def write_recipe(path: str | Path, labels: list[str], combiner: Combiner, thresholds: np.ndarray,
                 provenance: dict) -> Path:
    entries = {label: {"threshold": round(float(thresholds[j]), 4)} for j, label in enumerate(labels)}
    if isinstance(combiner, Stack):
        for j, label in enumerate(labels):
            entries[label] = {"encoder": round(combiner.encoder[j], 6), "lexical": round(combiner.lexical[j], 6),
                              "bias": round(combiner.bias[j], 6), **entries[label]}
    combine = "logistic" if isinstance(combiner, Stack) else "mean"
    write_json(Path(path), {"format": RECIPE_FORMAT, "combine": combine, "labels": entries, "provenance": provenance})
    return Path(path)


def read_recipe(path: str | Path) -> Recipe:
    """The combiner and, per label, {threshold} (+ {encoder, lexical, bias} for a logistic stack); an
    InputError names the file and the problem."""
    import json

    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: cannot read the stack recipe ({err})") from None
    if not isinstance(obj, dict) or obj.get("format") != RECIPE_FORMAT or not isinstance(obj.get("labels"), dict):
        raise InputError(f"{path}: not a {RECIPE_FORMAT} file")
    combine = obj.get("combine", "logistic")  # recipes written before the mean existed were all logistic
    if combine not in COMBINES:
        raise InputError(f"{path}: unknown combine {combine!r}; choose from {list(COMBINES)}")
    keys = ("threshold",) if combine == "mean" else ("encoder", "lexical", "bias", "threshold")
    recipe = Recipe(combine=combine)
    for label, entry in obj["labels"].items():
        try:
            recipe.labels[label] = {k: float(entry[k]) for k in keys}
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path}: label {label!r} needs numeric {', '.join(keys)}") from None
    return recipe


def stack_for(labels: list[str], recipe: Recipe, dev_encoder: np.ndarray,
              dev_lexical: np.ndarray, y_dev: np.ndarray) -> tuple[Combiner, np.ndarray, list[str]]:
    """The combiner and thresholds for `labels`: from the recipe; a logistic stack's labels the recipe
    lacks are fitted on dev (threshold 0.5). Returns the labels fitted on dev too, so the run can say so."""
    if recipe.combine == "mean":
        thresholds = np.asarray([recipe.labels.get(label, {}).get("threshold", 0.5) for label in labels])
        return ProbabilityMean(len(labels)), thresholds, []
    fitted = fit_stack(dev_encoder, dev_lexical, y_dev)
    weights: dict[str, list[float]] = {"encoder": [], "lexical": [], "bias": []}
    thresholds, from_dev = [], []
    for j, label in enumerate(labels):
        entry = recipe.labels.get(label)
        if entry is None:
            from_dev.append(label)
            entry = {"encoder": fitted.encoder[j], "lexical": fitted.lexical[j], "bias": fitted.bias[j], "threshold": 0.5}
        for key in weights:
            weights[key].append(entry[key])
        thresholds.append(entry["threshold"])
    return Stack(**weights), np.asarray(thresholds), from_dev
