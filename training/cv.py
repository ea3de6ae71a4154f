"""K-fold cross-validation grouped by document: the tagger's primary metric.

One 1,200-row test split moves by about ±0.02 from noise alone, so variants are
compared on out-of-fold (OOF) scores over all labelled data, with the fold-to-fold
spread. Every system sees the same folds; the encoder's frozen lower layers are
computed once per experiment and shared by the folds (`state_bank`).
"""

from __future__ import annotations

import resource
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from policylens.metrics.multilabel import binary_f1
from policylens.taxonomy import Taxonomy

SYSTEMS = ("encoder", "tfidf", "keyword")


@dataclass
class CVConfig:
    """How the folds are drawn and which systems get out-of-fold scores."""

    folds: int = 5
    seed: int = 13
    inner_dev: float = 0.1  # share of a training fold's documents kept for early stopping and temperature
    systems: tuple[str, ...] = SYSTEMS

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2, got {self.folds}")
        if not 0 < self.inner_dev < 0.5:
            raise ValueError(f"inner_dev must be in (0, 0.5), got {self.inner_dev}")
        unknown = sorted(set(self.systems) - set(SYSTEMS))
        if unknown:
            raise ValueError(f"unknown system(s) {unknown}; choose from {list(SYSTEMS)}")


@dataclass
class OutOfFold:
    """Every row's score from the model that did not see it, for each system."""

    labels: list[str]
    y: np.ndarray  # [rows, labels] 0/1
    folds: np.ndarray  # [rows] fold index
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # system -> logits (keyword: 0/1)
    seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)


def document_folds(rows: Sequence[dict], k: int, seed: int) -> np.ndarray:
    """Fold index per row: whole documents per fold, stratified on each row's rarest label."""
    from sklearn.model_selection import StratifiedGroupKFold

    counts: dict[str, int] = {}
    for row in rows:
        for label in row["labels"]:
            counts[label] = counts.get(label, 0) + 1
    strata = [min(row["labels"], key=lambda label: counts[label]) if row["labels"] else "none" for row in rows]
    folds = np.zeros(len(rows), dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(rows)), strata, [r["doc_id"] for r in rows])):
        folds[held_out] = fold
    return folds


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def oof_tfidf(rows: Sequence[dict], folds: np.ndarray, labels: list[str], extra: Sequence[dict] = ()) -> np.ndarray:
    """TF-IDF + logistic regression logits; `extra` rows only ever train, never score."""
    from training.baselines import TfidfBaseline

    out = np.zeros((len(rows), len(labels)), dtype=np.float64)
    for fold in np.unique(folds):
        train = [r for r, f in zip(rows, folds) if f != fold] + list(extra)
        held = np.flatnonzero(folds == fold)
        model = TfidfBaseline(label_names=labels).fit([r["text"] for r in train], [r["targets"] for r in train])
        out[held] = model.decision_function([rows[i]["text"] for i in held])
    return out


def oof_keyword(rows: Sequence[dict], taxonomy: Taxonomy) -> np.ndarray:
    from training.baselines import KeywordBaseline

    return KeywordBaseline(taxonomy).predict([r["text"] for r in rows]).astype(np.float64)


def oof_encoder(
    rows: Sequence[dict],
    folds: np.ndarray,
    taxonomy: Taxonomy,
    config,
    cv: CVConfig,
    extra: Sequence[dict] = (),
    progress: bool = True,
) -> tuple[np.ndarray, list[float]]:
    """Raw pooled encoder logits, each fold trained exactly as `policylens train` trains
    (early stopping and temperature on an inner dev split of the training documents)."""
    from policylens.dataset import SplitConfig, split_by_document
    from training.tagger import train_tagger

    out = np.zeros((len(rows), len(taxonomy)), dtype=np.float32)
    bank: dict = {}  # one experiment, one frozen-layer config: the lower layers run once per paragraph
    seconds = []
    work = Path(tempfile.mkdtemp(prefix="policylens-cv-"))
    try:
        for fold in np.unique(folds):
            started = time.time()
            train_rows = [r for r, f in zip(rows, folds) if f != fold]
            inner = split_by_document(train_rows, SplitConfig(dev=cv.inner_dev, test=0.0, seed=cv.seed + int(fold)))
            held = np.flatnonzero(folds == fold)
            splits = {"train": inner["train"] + list(extra), "dev": inner["dev"], "test": [rows[i] for i in held]}
            # the encoder alone: the lexical model has its own OOF scores and the stack is fitted on both
            result = train_tagger(splits, taxonomy, work / f"fold{fold}", replace(config, ensemble=False), progress=progress,
                                  state_bank=bank)
            out[held] = result.test_logits
            shutil.rmtree(work / f"fold{fold}", ignore_errors=True)
            seconds.append(round(time.time() - started, 1))
            if progress:
                print(f"fold {fold}: {seconds[-1]:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out, seconds


def cross_validate(
    rows: Sequence[dict],
    taxonomy: Taxonomy,
    tagger_config=None,
    cv: CVConfig | None = None,
    extra: Sequence[dict] = (),
    progress: bool = True,
) -> OutOfFold:
    """Out-of-fold scores of every system in `cv.systems` on the same document folds.

    `extra` rows (for instance the noisier batch 4) join every training fold and never a test fold.
    """
    from training.tagger import TaggerConfig

    cv = cv or CVConfig()
    rows = list(rows)
    y = np.asarray([r["targets"] for r in rows], dtype=int)
    result = OutOfFold(labels=taxonomy.ids, y=y, folds=document_folds(rows, cv.folds, cv.seed))
    for system in cv.systems:
        started = time.time()
        if system == "keyword":
            result.scores[system] = oof_keyword(rows, taxonomy)
        elif system == "tfidf":
            result.scores[system] = oof_tfidf(rows, result.folds, taxonomy.ids, extra)
        else:
            result.scores[system], _ = oof_encoder(
                rows, result.folds, taxonomy, tagger_config or TaggerConfig(), cv, extra, progress
            )
        result.seconds[system] = round(time.time() - started, 1)
        result.peak_rss_mb[system] = _peak_rss_mb()
    return result


# -- scoring -------------------------------------------------------------------


def per_fold_f1(y: np.ndarray, pred: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """[folds, labels] F1 of each label within each fold (NaN where a fold has no positive)."""
    table = np.full((len(np.unique(folds)), y.shape[1]), np.nan)
    for k, fold in enumerate(np.unique(folds)):
        mask = folds == fold
        for j in range(y.shape[1]):
            if y[mask, j].any():
                table[k, j] = float(binary_f1(y[mask, j][None, :], pred[mask, j][None, :].astype(bool))[0])
    return table


def fold_summary(y: np.ndarray, pred: np.ndarray, folds: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Macro-F1 and per-label F1, mean ± std over folds (the spread is what two variants must beat)."""
    table = per_fold_f1(y, pred, folds)
    macro = np.nanmean(table, axis=1)
    return {
        "macro_f1": round(float(macro.mean()), 4),
        "macro_f1_std": round(float(macro.std(ddof=1)), 4),
        "per_fold_macro_f1": [round(float(m), 4) for m in macro],
        "per_label": {
            label: {"f1": round(float(np.nanmean(table[:, j])), 4), "std": round(float(np.nanstd(table[:, j], ddof=1)), 4)}
            for j, label in enumerate(labels)
        },
    }


def system_predictions(oof: OutOfFold) -> dict[str, np.ndarray]:
    """0/1 predictions of every system, plus the stacked ensemble when both of its inputs are there.

    The ensemble's stack and thresholds are cross-fitted: each fold is predicted by a stack
    (and thresholds) chosen on the other folds' OOF scores only.
    """
    from training.stack import choose_thresholds, crossfit_stack_probs

    preds = {}
    for system, scores in oof.scores.items():
        preds[system] = scores.astype(int) if system == "keyword" else (scores > 0).astype(int)
    if "encoder" in oof.scores and "tfidf" in oof.scores:
        probs = crossfit_stack_probs(oof.scores["encoder"], oof.scores["tfidf"], oof.y, oof.folds)
        pred = np.zeros_like(oof.y)
        for fold in np.unique(oof.folds):
            held = oof.folds == fold
            thresholds, _ = choose_thresholds(oof.y[~held], probs[~held], oof.folds[~held])
            pred[held] = probs[held] >= thresholds
        preds["ensemble"] = pred
    return preds


def cv_report(oof: OutOfFold) -> dict[str, Any]:
    """Per system: macro and per-label F1, mean ± std over folds, with its time and peak memory."""
    report = {}
    for system, pred in system_predictions(oof).items():
        report[system] = fold_summary(oof.y, pred, oof.folds, oof.labels)
        inputs = ("encoder", "tfidf") if system == "ensemble" else (system,)
        report[system]["seconds"] = round(sum(oof.seconds.get(s, 0.0) for s in inputs), 1)
        report[system]["peak_rss_mb"] = max(oof.peak_rss_mb.get(s, 0.0) for s in inputs)
    return report


def cv_markdown(report: dict[str, Any], labels: list[str]) -> str:
    """One table: systems as rows, macro-F1 ± std and each label's F1 ± std as columns."""
    head = "| system | macro-F1 | " + " | ".join(labels) + " | train s (all folds) | peak MB |"
    lines = [head, "|" + "---|" * (len(labels) + 4)]
    for system, row in report.items():
        cells = [f"{row['per_label'][label]['f1']:.3f} ± {row['per_label'][label]['std']:.3f}" for label in labels]
        lines.append(f"| {system} | **{row['macro_f1']:.3f} ± {row['macro_f1_std']:.3f}** | " + " | ".join(cells)
                     + f" | {row['seconds']:.0f} | {row['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def save_oof(oof: OutOfFold, path: str | Path, info: dict[str, Any]) -> Path:
    """OOF scores as safetensors (arrays) + JSON (labels, timings, `info` such as the data fingerprint)."""
    from safetensors.numpy import save

    from policylens.io import atomic_write, write_json

    path = Path(path)
    arrays = {"y": oof.y.astype(np.int64), "folds": oof.folds.astype(np.int64)}
    arrays.update({f"scores.{k}": np.ascontiguousarray(v, dtype=np.float64) for k, v in oof.scores.items()})
    with atomic_write(path.with_suffix(".safetensors"), "wb") as handle:
        handle.write(save(arrays))
    write_json(path.with_suffix(".json"), {"labels": oof.labels, "seconds": oof.seconds,
                                            "peak_rss_mb": oof.peak_rss_mb, **info})
    return path


def load_oof(path: str | Path) -> tuple[OutOfFold, dict[str, Any]]:
    import json

    from safetensors.numpy import load_file

    path = Path(path)
    info = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    arrays = load_file(str(path.with_suffix(".safetensors")))
    oof = OutOfFold(labels=info["labels"], y=arrays["y"], folds=arrays["folds"],
                    scores={k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("scores.")},
                    seconds=info.get("seconds", {}), peak_rss_mb=info.get("peak_rss_mb", {}))
    return oof, info
