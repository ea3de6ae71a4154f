"""Retrain on added data without forgetting, gate the result, register it (and promote if it passes).

One call of `retrain`:

1. rebuild the dataset from the label store (base sources + log) at its latest version;
2. split by document with the registry's recorded assignments: every document a
   registered model has seen keeps its split (so the test documents fixed on
   first training never move); only new documents are split, by the usual
   stratified document split;
3. warm-start from the current version (growing the classification head when
   the taxonomy gained domains) or start from the backbone;
4. train on new data + old training data (all of it by default, `mix_old`
   samples a fraction of old documents) into a staging dir inside the registry;
5. score old and new model on the same test rows and on the new data's dev
   rows, run the gate, write report.md/report.json, register the version, and
   promote it when the gate passes.

Only the registry is written, and CURRENT only by an atomic rename, so this can
run beside a server that watches `models/registry/CURRENT`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policylens.dataset import SPLITS, SplitConfig, split_by_document
from policylens.hashing import seeded_unit
from policylens.io import InputError, write_json
from policylens.metrics import paired_bootstrap_f1_change
from policylens.taxonomy import Taxonomy
from training.registry import GateConfig, GateDecision, Registry, gate
from training.store import LabelStore
from training.tagger import TaggerConfig, TrainResult, data_fingerprint, train_tagger

STARTS = ("current", "backbone")
TrainFn = Callable[..., TrainResult]


@dataclass
class RetrainConfig:
    start: str = "current"  # warm-start from the current version, or "backbone" (from scratch)
    mix_old: float = 1.0  # fraction of old training documents mixed back in (1.0: all; guards against forgetting)
    split: SplitConfig = field(default_factory=SplitConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    tagger: TaggerConfig = field(default_factory=TaggerConfig)
    promote: bool = True  # promote automatically when the gate passes
    max_changed: int = 50  # changed predictions listed in the report
    new_row_init_std: float = 0.01  # a new domain's head row: small noise (bias: the mean of the old biases)

    def __post_init__(self) -> None:
        if self.start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {self.start!r}")
        if not 0 <= self.mix_old <= 1:
            raise ValueError(f"mix_old must be in [0, 1], got {self.mix_old}")
        if self.max_changed < 0 or self.new_row_init_std < 0:
            raise ValueError("max_changed and new_row_init_std must be >= 0")


@dataclass
class RetrainResult:
    version: str
    promoted: bool
    decision: GateDecision
    report: dict[str, Any]
    model_dir: Path


# -- warm start -----------------------------------------------------------------


def grow_head(parent_dir: str | Path, taxonomy: Taxonomy, out_dir: str | Path, init_std: float = 0.01, seed: int = 13) -> Path:
    """A copy of `parent_dir`'s model whose classifier has one row per label of `taxonomy`.

    Rows of labels the parent knows are copied unchanged (matched by id, so the
    learned domains start exactly where they were); a new label's row starts
    near zero with the mean old bias, i.e. "about as rare as an average domain".
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from policylens.tagger.model_dir import TaggerMeta

    parent_dir, out_dir = Path(parent_dir), Path(out_dir)
    old_ids = TaggerMeta.load(parent_dir).taxonomy.ids
    dropped = sorted(set(old_ids) - set(taxonomy.ids))
    if dropped:
        raise InputError(f"the taxonomy lost label(s) {dropped} the current model knows; retrain with --from backbone")
    model = AutoModelForSequenceClassification.from_pretrained(parent_dir, use_safetensors=True)
    old = model.classifier
    new = torch.nn.Linear(old.in_features, len(taxonomy))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        new.weight.copy_(torch.randn(new.weight.shape, generator=generator) * init_std)
        new.bias.fill_(float(old.bias.mean()))
        for i, label in enumerate(taxonomy.ids):
            if label in old_ids:
                new.weight[i] = old.weight[old_ids.index(label)]
                new.bias[i] = old.bias[old_ids.index(label)]
    model.classifier = new
    model.num_labels = model.config.num_labels = len(taxonomy)
    model.config.id2label = dict(enumerate(taxonomy.ids))
    model.config.label2id = {label: i for i, label in enumerate(taxonomy.ids)}
    model.save_pretrained(out_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(parent_dir).save_pretrained(out_dir)
    return out_dir


# -- data -----------------------------------------------------------------------


def assign_splits(rows: list[dict], known: dict[str, str], config: SplitConfig) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """Known documents keep their recorded split; new documents are split among themselves."""
    splits: dict[str, list[dict]] = {split: [] for split in SPLITS}
    new_rows = [row for row in rows if row["doc_id"] not in known]
    for row in rows:
        if row["doc_id"] in known:
            splits[known[row["doc_id"]]].append(row)
    assignments = dict(known)
    for split, split_rows in split_by_document(new_rows, config).items():
        splits[split].extend(split_rows)
        assignments.update({row["doc_id"]: split for row in split_rows})
    return splits, assignments


def changed_since(rows: list[dict], old_rows: list[dict]) -> set[str]:
    """Ids of rows that are new or relabelled relative to `old_rows` (what the old model never learned)."""
    old = {row["id"]: row["labels"] for row in old_rows}
    return {row["id"] for row in rows if old.get(row["id"]) != row["labels"]}


def mix_old_rows(train: list[dict], new_ids: set[str], fraction: float, seed: int) -> list[dict]:
    """All new rows + a deterministic `fraction` of old training documents."""
    if fraction >= 1:
        return list(train)
    return [row for row in train if row["id"] in new_ids or seeded_unit(seed, row["doc_id"]) < fraction]


# -- evaluation -----------------------------------------------------------------


def predict_labels(model_dir: Path, texts: list[str], label_ids: list[str], num_threads: int | None = None) -> np.ndarray:
    """Multi-hot predictions in `label_ids` order (labels a model does not know are never predicted)."""
    from policylens.tagger.scoring import Tagger

    y = np.zeros((len(texts), len(label_ids)), dtype=int)
    if not texts:
        return y
    predictor = Tagger(model_dir, num_threads=num_threads)
    index = {label: i for i, label in enumerate(label_ids)}
    for row, tags in enumerate(predictor.predict(texts)):
        for label in tags.labels:
            if label in index:
                y[row, index[label]] = 1
    return y


def _report(y_true: np.ndarray, y_pred: np.ndarray, label_ids: list[str]) -> dict:
    from policylens.metrics import multilabel_report

    return multilabel_report(y_true, y_pred, label_ids)


def _names(y: np.ndarray, label_ids: list[str]) -> list[str]:
    return [label for label, on in zip(label_ids, y) if on]


# -- the whole run ----------------------------------------------------------------


def retrain(
    store: LabelStore,
    registry: Registry,
    config: RetrainConfig | None = None,
    *,
    train_fn: TrainFn = train_tagger,
    progress: bool = True,
) -> RetrainResult:
    """Train, gate, register (and maybe promote) one new version; see the module docstring."""
    config = config or RetrainConfig()
    registry.verify(clean=True)  # leftovers of killed runs; a live run's staging is left alone
    taxonomy = store.taxonomy()
    rows = store.rows()
    if not rows:
        raise InputError("no labelled paragraphs in the store or its base sources")
    data_version = store.version
    parent = registry.current()
    parent_dir = registry.path(parent) if parent else None
    parent_info = registry.info(parent) if parent else {}
    old_domains = parent_info.get("labels", []) if parent else []
    if parent and parent_info.get("data_version") in store.versions():
        new_ids = changed_since(rows, store.rows(parent_info["data_version"]))
    else:
        new_ids = {row["id"] for row in rows} if not parent else set()

    splits, assignments = assign_splits(rows, registry.split_assignments(), config.split)
    splits["train"] = mix_old_rows(splits["train"], new_ids, config.mix_old, config.split.seed)
    for row in (r for split_rows in splits.values() for r in split_rows):
        row["targets"] = taxonomy.multi_hot(row["labels"])

    tagger_config = config.tagger
    with registry.staging() as stage:
        warm = stage.with_name(stage.name + ".warm")
        try:
            if config.start == "current" and parent_dir is not None:
                tagger_config = TaggerConfig(**{**asdict(config.tagger), "backbone": str(
                    grow_head(parent_dir, taxonomy, warm, config.new_row_init_std, config.tagger.seed))})
            train_fn(splits, taxonomy, stage, tagger_config, progress=progress)
        finally:
            shutil.rmtree(warm, ignore_errors=True)
        report = build_report(splits, taxonomy, stage, parent_dir, old_domains, new_ids, config)
        # the yardstick changed when documents were moved between splits while the parent was current
        report["split_moves"] = [m for m in registry.split_moves() if parent and m.get("current") == parent]
        decision = GateDecision(**report["gate"])
        write_report(stage, report)
        info = {
            "parent": parent,
            "start": config.start if parent else "backbone",
            "data_version": data_version,
            "data_fingerprint": data_fingerprint(splits),
            "labels": taxonomy.ids,
            "sizes": {split: len(split_rows) for split, split_rows in splits.items()},
            "new_rows": len(new_ids),
            "config": {"tagger": asdict(tagger_config), "mix_old": config.mix_old, "split": asdict(config.split),
                       "gate": asdict(config.gate)},
            "metrics": report["metrics"],
            "gate": decision.to_dict(),
        }
        version = registry.register(stage, info)
    report["version"] = version
    write_report(registry.path(version), report)  # now with its name (the dir is complete either way)
    registry.record_splits(assignments, version)
    promoted = decision.promote and config.promote
    if promoted:
        registry.promote(version, note="gate passed")
    return RetrainResult(version, promoted, decision, report, registry.path(version))


_EFFECT_ORDER = {"worse": 0, "mixed": 1, "better": 2}


def changed_predictions(rows: list[dict], gold: np.ndarray, old: np.ndarray, new: np.ndarray, ids: list[str],
                        old_domains: list[str]) -> list[dict]:
    """Rows whose predicted labels changed, regressions first: a reviewer of the gate looks there.

    `lost` are labels the old model had right and the new one has wrong, `gained`
    the reverse; losses on old domains sort before any other change."""
    out = []
    for row, g, before, after in zip(rows, gold, old, new):
        if not (before != after).any():
            continue
        lost = [ids[j] for j in np.flatnonzero((before == g) & (after != g))]
        gained = [ids[j] for j in np.flatnonzero((before != g) & (after == g))]
        effect = "mixed" if lost and gained else "worse" if lost else "better"
        out.append({"id": row["id"], "text": row["text"], "gold": _names(g, ids), "old": _names(before, ids),
                    "new": _names(after, ids), "effect": effect, "lost": lost, "gained": gained})
    old_set = set(old_domains)
    return sorted(out, key=lambda ex: (not old_set.intersection(ex["lost"]), _EFFECT_ORDER[ex["effect"]]))


def build_report(
    splits: dict[str, list[dict]],
    taxonomy: Taxonomy,
    new_dir: Path,
    old_dir: Path | None,
    old_domains: list[str],
    new_ids: set[str],
    config: RetrainConfig,
) -> dict[str, Any]:
    """Old vs new on the fixed test split and on the new dev rows, the gate's decision, changed predictions."""
    ids = taxonomy.ids
    threads = config.tagger.num_threads
    test, dev_new = splits["test"], [row for row in splits["dev"] if row["id"] in new_ids]
    y_test = np.asarray([taxonomy.multi_hot(r["labels"]) for r in test], dtype=int).reshape(len(test), len(ids))
    y_dev_new = np.asarray([taxonomy.multi_hot(r["labels"]) for r in dev_new], dtype=int).reshape(len(dev_new), len(ids))
    new_test = predict_labels(new_dir, [r["text"] for r in test], ids, threads)
    new_dev = predict_labels(new_dir, [r["text"] for r in dev_new], ids, threads)
    metrics: dict[str, Any] = {"new": {"test": _report(y_test, new_test, ids)}}
    if dev_new:
        metrics["new"]["dev_new_rows"] = _report(y_dev_new, new_dev, ids)
    changed: list[dict] = []
    if old_dir is not None:
        old_test = predict_labels(old_dir, [r["text"] for r in test], ids, threads)
        old_dev = predict_labels(old_dir, [r["text"] for r in dev_new], ids, threads)
        metrics["old"] = {"test": _report(y_test, old_test, ids)}
        kept = [label for label in old_domains if label in ids]
        cols = [ids.index(label) for label in kept]
        metrics["change_interval_90"] = paired_bootstrap_f1_change(
            y_test[:, cols], old_test[:, cols], new_test[:, cols], kept)
        if dev_new:
            metrics["old"]["dev_new_rows"] = _report(y_dev_new, old_dev, ids)
        changed = changed_predictions(test, y_test, old_test, new_test, ids, old_domains)
    decision = gate(
        metrics.get("old", {}).get("test"), metrics["new"]["test"], old_domains,
        old_new_dev=metrics.get("old", {}).get("dev_new_rows"), new_new_dev=metrics["new"].get("dev_new_rows"),
        change_intervals=metrics.get("change_interval_90"), config=config.gate,
    )
    return {
        "labels": ids,
        "old_domains": old_domains,
        "new_domains": [label for label in ids if label not in old_domains] if old_dir is not None else [],
        "sizes": {split: len(split_rows) for split, split_rows in splits.items()},
        "new_rows": len(new_ids),
        "new_dev_rows": len(dev_new),
        # a document keeps its split for good: rows of a test document re-score the gate, they never train
        "new_train_rows": sum(row["id"] in new_ids for row in splits["train"]),
        "new_test_rows": sum(row["id"] in new_ids for row in test),
        "metrics": metrics,
        "gate": decision.to_dict(),
        "gate_rule": config.gate.drop_rule,
        "changed_counts": {effect: sum(ex["effect"] == effect for ex in changed)
                           for effect in ("worse", "mixed", "better")},
        "changed_examples": changed[: config.max_changed],
    }


def _where_new_rows(report: dict[str, Any]) -> str:
    """Where the new rows went: only those in train teach the model; those in test change the yardstick."""
    if "new_test_rows" not in report:  # a report written before these counts were kept
        return f"{report['new_dev_rows']} of them in dev"
    return (f"{report['new_train_rows']} in train, {report['new_dev_rows']} in dev, {report['new_test_rows']} in the "
            "fixed test split, where they change the labels both models are scored against but train neither")


def _moves_markdown(moves: list[dict]) -> list[str]:
    if not moves:
        return []
    return ["", (f"The splits changed since the current version: {len(moves)} document(s) moved, so the fixed "
                 "test split is not the one the current version was gated on:"),
            *[f"- {m['doc_id']}: {m['from']} -> {m['to']} ({m['note']})" for m in moves]]


def render_markdown(report: dict[str, Any]) -> str:
    ids = report["labels"]
    new, old = report["metrics"]["new"]["test"], report["metrics"].get("old", {}).get("test")
    gate_ = report["gate"]
    lines = [
        f"# Retraining report {report.get('version', '')}".rstrip(),
        "",
        f"**Gate: {'PASSED, PROMOTE' if gate_['promote'] else 'REFUSED, NOT PROMOTED'}**",
        "",
        *([f"- {reason}" for reason in gate_["reasons"]] or ["- every check passed"]),
        *[f"- **warning:** {warning}" for warning in gate_.get("warnings", [])],
        "",
        "Data: " + ", ".join(f"{k} {v}" for k, v in report["sizes"].items()) + " rows;"
        f" {report['new_rows']} new or relabelled rows ({_where_new_rows(report)})."
        f" New domains: {', '.join(report['new_domains']) or 'none'}.",
        *_moves_markdown(report.get("split_moves", [])),
        "",
        "## Fixed test split (old vs new model on the same rows)",
        "",
        "| domain | support | old F1 | new F1 | change | 90% interval of the change |",
        "|---|---:|---:|---:|---:|---|",
    ]
    interval = report["metrics"].get("change_interval_90", {})

    def _interval(key: str) -> str:
        if key not in interval or (key == "macro_f1" and report["new_domains"]):  # that one is over old domains only
            return "-"
        return f"{interval[key][0]:+.3f} … {interval[key][1]:+.3f}"

    for label in ids:
        n = new["per_label"][label]["support"]
        nf = new["per_label"][label]["f1"]
        of = old["per_label"][label]["f1"] if old else None
        lines.append(f"| {label} | {n} | {'-' if of is None else f'{of:.3f}'} | {nf:.3f} | "
                     f"{'-' if of is None else f'{nf - of:+.3f}'} | {_interval(label)} |")
    for key, title in (("macro_f1", "macro-F1"), ("micro_f1", "micro-F1")):
        of = old[key] if old else None
        lines.append(f"| **{title}** | | {'-' if of is None else f'{of:.3f}'} | {new[key]:.3f} | "
                     f"{'-' if of is None else f'{new[key] - of:+.3f}'} | {_interval(key)} |")
    if interval:
        lo, hi = interval["macro_f1"]
        lines += ["", f"Macro-F1 over the old domains changed by {lo:+.3f} … {hi:+.3f} (90% interval). The intervals "
                  "resample the test rows (paired bootstrap, 1,000 draws): a change whose interval spans 0 may be "
                  "noise. " + ("The gate forgives a drop over its margin whose interval reaches 0 (--gate-rule significant)."
                               if report.get("gate_rule") == "significant" else
                               "The gate itself compares point estimates (--gate-rule point).")]
    lines += ["", "## Gate checks", ""]
    if gate_["checks"]:
        lines += ["| check | old | new | passed |", "|---|---:|---:|---|"]
    else:
        lines.append("none: there is no current model to compare with")
    for check in gate_["checks"]:
        lines.append(f"| {check['check']} | {check.get('old', '-')} | {check.get('new', '-')} | "
                     f"{'yes' if check['passed'] else '**no**'} {check.get('note', '')} |")
    changed = report["changed_examples"]
    counts = report.get("changed_counts", {})
    lines += ["", "## Changed test predictions", ""]
    if changed:
        lines += [f"{sum(counts.values())} test paragraphs changed: {counts.get('worse', 0)} worse, "
                  f"{counts.get('mixed', 0)} mixed, {counts.get('better', 0)} better. The first {len(changed)}, "
                  "losses on old domains first:", "",
                  "| id | effect | gold | old | new | text |", "|---|---|---|---|---|---|"]
        for ex in changed:
            text = ex["text"][:60].replace("|", "\\|")
            effect = ex["effect"] + (f" (lost {', '.join(ex['lost'])})" if ex["lost"] else "")
            lines.append(f"| {ex['id']} | {effect} | {', '.join(ex['gold']) or '-'} | {', '.join(ex['old']) or '-'} | "
                         f"{', '.join(ex['new']) or '-'} | {text} |")
    else:
        lines.append("none" if old else "no previous model to compare with")
    return "\n".join(lines) + "\n"


def write_report(model_dir: Path, report: dict[str, Any]) -> None:
    write_json(model_dir / "report.json", report)
    (model_dir / "report.md").write_text(render_markdown(report), encoding="utf-8")
