"""What cross-validation reports: every system's fold-by-fold F1, the ensemble cross-fitted,
and the OOF scores on disk so variants can be compared without training again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from policylens.metrics.multilabel import binary_f1
from training.cv import OutOfFold


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


ENSEMBLES = {"ensemble": "mean", "stack": "logistic"}  # reported name -> combiner; "ensemble" is the default


def system_predictions(oof: OutOfFold) -> dict[str, np.ndarray]:
    """0/1 predictions of every system, plus both ensembles (the default mean of probabilities, and the
    logistic stack) when both of their inputs are there.

    Thresholds (and the stack's weights) are cross-fitted: each fold is predicted with those chosen on
    the other folds' OOF scores only.
    """
    from training.stack import choose_thresholds, crossfit_stack_probs

    preds = {}
    for system, scores in oof.scores.items():
        preds[system] = scores.astype(int) if system == "keyword" else (scores > 0).astype(int)
    if "encoder" in oof.scores and "lexical" in oof.scores:
        for name, combine in ENSEMBLES.items():
            probs = crossfit_stack_probs(oof.scores["encoder"], oof.scores["lexical"], oof.y, oof.folds, combine)
            pred = np.zeros_like(oof.y)
            for fold in np.unique(oof.folds):
                held = oof.folds == fold
                thresholds, _ = choose_thresholds(oof.y[~held], probs[~held], oof.folds[~held])
                pred[held] = probs[held] >= thresholds
            preds[name] = pred
    return preds


def row_slices(rows: list[dict]) -> dict[str, list[str]]:
    """How the rows divide for the breakdown: by genre (`source`) and, where the data record it, by whether
    the annotator was sure of the labels (`unsure`), with the rows a correction file relabelled apart."""
    slices = {"source": [str(r.get("source", "")) for r in rows]}
    if any("unsure" in r for r in rows):
        slices["annotator"] = ["corrected" if "labels_before" in r else
                               {True: "unsure", False: "sure"}.get(r.get("unsure"), "not recorded") for r in rows]
    return slices


def slice_summary(y: np.ndarray, preds: dict[str, np.ndarray], slices: dict[str, list[str]],
                  labels: list[str]) -> list[dict[str, Any]]:
    """Each system's F1 on each slice's rows, pooled over the folds (a slice is too small to split by fold):
    where the tagger fails, and whether its lead over the baselines holds in every genre."""
    out = []
    for name, values in slices.items():
        values = np.asarray(values)
        for value in sorted(set(values.tolist())):
            mask = values == value
            entry = {"slice": name, "value": value, "rows": int(mask.sum()),
                     "positives": {label: int(y[mask, j].sum()) for j, label in enumerate(labels)}, "systems": {}}
            for system, pred in preds.items():
                table = per_fold_f1(y[mask], pred[mask], np.zeros(int(mask.sum()), dtype=int))[0]
                entry["systems"][system] = {
                    "macro_f1": None if np.isnan(table).all() else round(float(np.nanmean(table)), 4),
                    "per_label": {label: None if np.isnan(f) else round(float(f), 4) for label, f in zip(labels, table)},
                }
            out.append(entry)
    return out


def paired_summary(y: np.ndarray, preds: dict[str, np.ndarray], folds: np.ndarray, labels: list[str],
                   reference: str) -> dict[str, Any]:
    """`reference` minus every other system, fold by fold on the same rows: the mean difference, its spread
    over folds, the folds where `reference` is ahead, and whether it is ahead by more than the spread."""
    ref = per_fold_f1(y, preds[reference], folds)

    def entry(diff: np.ndarray) -> dict[str, Any]:
        mean, std = float(np.nanmean(diff)), float(np.nanstd(diff, ddof=1))
        return {"mean": round(mean, 4), "std": round(std, 4), "ahead": int((diff > 0).sum()), "folds": len(diff),
                "beyond_spread": bool(mean > std)}

    out = {}
    for system, pred in preds.items():
        if system == reference:
            continue
        other = per_fold_f1(y, pred, folds)
        out[system] = {"macro_f1": entry(np.nanmean(ref, 1) - np.nanmean(other, 1)),
                       "per_label": {label: entry(ref[:, j] - other[:, j]) for j, label in enumerate(labels)}}
    return out


def cv_report(oof: OutOfFold, slices: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Per system: macro and per-label F1, mean ± std over folds, with its time and peak memory; with
    `slices` (see `row_slices`), also each system's F1 on every slice under the key `by_slice`."""
    report: dict[str, Any] = {}
    preds = system_predictions(oof)
    for system, pred in preds.items():
        report[system] = fold_summary(oof.y, pred, oof.folds, oof.labels)
        inputs = ("encoder", "lexical") if system in ENSEMBLES else (system,)
        report[system]["seconds"] = round(sum(oof.seconds.get(s, 0.0) for s in inputs), 1)
        report[system]["peak_rss_mb"] = max(oof.peak_rss_mb.get(s, 0.0) for s in inputs)
    if "ensemble" in preds:
        report["paired"] = paired_summary(oof.y, preds, oof.folds, oof.labels, "ensemble")
    if slices:
        report["by_slice"] = slice_summary(oof.y, preds, slices, oof.labels)
    return report


EXTRA_SECTIONS = ("paired", "by_slice")  # report keys that are not systems


def cv_markdown(report: dict[str, Any], labels: list[str]) -> str:
    """One table: systems as rows, macro-F1 ± std and each label's F1 ± std as columns; then, when the
    report has them, the paired differences (`paired_markdown`) and the slices (`slice_markdown`)."""
    head = "| system | macro-F1 | " + " | ".join(labels) + " | train s (all folds) | peak MB |"
    lines = [head, "|" + "---|" * (len(labels) + 4)]
    for system, row in report.items():
        if system in EXTRA_SECTIONS:
            continue
        cells = [f"{row['per_label'][label]['f1']:.3f} ± {row['per_label'][label]['std']:.3f}" for label in labels]
        lines.append(f"| {system} | **{row['macro_f1']:.3f} ± {row['macro_f1_std']:.3f}** | " + " | ".join(cells)
                     + f" | {row['seconds']:.0f} | {row['peak_rss_mb']:.0f} |")
    if report.get("paired"):
        lines += ["", paired_markdown(report["paired"], labels)]
    if report.get("by_slice"):
        lines += ["", slice_markdown(report["by_slice"], labels)]
    return "\n".join(lines)


def paired_markdown(paired: dict[str, Any], labels: list[str]) -> str:
    """The default minus each system, mean ± spread over folds (folds ahead); ✓ where ahead by more than the spread."""

    def cell(e: dict[str, Any]) -> str:
        return f"{e['mean']:+.3f} ± {e['std']:.3f} ({e['ahead']}/{e['folds']}){' ✓' if e['beyond_spread'] else ''}"

    lines = [("The default (ensemble) minus each system, fold by fold on the same rows; ✓: ahead by more than "
              "the fold spread:"), "", "| ensemble minus | macro-F1 | " + " | ".join(labels) + " |",
             "|" + "---|" * (len(labels) + 2)]
    for system, e in paired.items():
        lines.append(f"| {system} | {cell(e['macro_f1'])} | "
                     + " | ".join(cell(e["per_label"][label]) for label in labels) + " |")
    return "\n".join(lines)


def slice_markdown(by_slice: list[dict[str, Any]], labels: list[str]) -> str:
    """Slices as rows: the first system's (the default's) per-label F1, then every system's macro-F1."""
    systems = list(by_slice[0]["systems"])
    main = "ensemble" if "ensemble" in systems else systems[0]

    def f1(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    lines = ["F1 by slice, OOF rows pooled over the folds (positives in brackets):", "",
             "| slice | rows | " + " | ".join(f"{main} {label}" for label in labels) + " | "
             + " | ".join(f"{s} macro" for s in systems) + " |",
             "|" + "---|" * (2 + len(labels) + len(systems))]
    for entry in by_slice:
        per_label = entry["systems"][main]["per_label"]
        lines.append(f"| {entry['slice']}: {entry['value']} | {entry['rows']} | "
                     + " | ".join(f"{f1(per_label[label])} ({entry['positives'][label]})" for label in labels) + " | "
                     + " | ".join(f1(entry["systems"][s]["macro_f1"]) for s in systems) + " |")
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
