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

from policylens.dataset import first_labels
from policylens.taxonomy import Taxonomy

SYSTEMS = ("encoder", "lexical", "tfidf", "keyword")  # lexical: the default's lexical half; tfidf: the baseline
LEXICAL_ONLY = ("lexical_word_ngrams",)  # TaggerConfig fields only the lexical half reads: not in the encoder's key


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
    """Fold index per row: whole documents per fold, stratified on each row's rarest label (as first read:
    `policylens.dataset.first_labels`)."""
    from sklearn.model_selection import StratifiedGroupKFold

    labels = [first_labels(row) for row in rows]
    counts: dict[str, int] = {}
    for row_labels in labels:
        for label in row_labels:
            counts[label] = counts.get(label, 0) + 1
    strata = [min(row_labels, key=lambda label: counts[label]) if row_labels else "none" for row_labels in labels]
    folds = np.zeros(len(rows), dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(rows)), strata, [r["doc_id"] for r in rows])):
        folds[held_out] = fold
    return folds


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def extra_outside(extra: Sequence[dict], held_out: Sequence[dict]) -> list[dict]:
    """The extra rows from documents other than the held-out ones: another paragraph of a test
    document would tell the model about that document."""
    docs = {r["doc_id"] for r in held_out}
    return [r for r in extra if r["doc_id"] not in docs]


def fold_splits(rows: Sequence[dict], folds: np.ndarray, fold: int, cv: CVConfig,
                extra: Sequence[dict] = ()) -> dict[str, list[dict]]:
    """One fold as its encoder trains: the held-out rows are the test split; 10% of the other documents
    (`cv.inner_dev`) are kept for early stopping and the temperature; `extra` rows only ever train."""
    from policylens.dataset import SplitConfig, split_by_document

    train_rows = [r for r, f in zip(rows, folds) if f != fold]
    inner = split_by_document(train_rows, SplitConfig(dev=cv.inner_dev, test=0.0, seed=cv.seed + int(fold)))
    test = [rows[i] for i in np.flatnonzero(folds == fold)]
    return {"train": inner["train"] + extra_outside(extra, test + inner["dev"]), "dev": inner["dev"], "test": test}


def oof_tfidf(rows: Sequence[dict], folds: np.ndarray, labels: list[str], extra: Sequence[dict] = (),
              word_ngram_range: tuple[int, int] | None = None) -> np.ndarray:
    """TF-IDF + logistic regression logits; `extra` rows only ever train, never score. With `word_ngram_range`,
    the default tagger's lexical half (characters and words); without, the character baseline."""
    from training.baselines import TfidfBaseline

    out = np.zeros((len(rows), len(labels)), dtype=np.float64)
    for fold in np.unique(folds):
        held_rows = [r for r, f in zip(rows, folds) if f == fold]
        train = [r for r, f in zip(rows, folds) if f != fold] + extra_outside(extra, held_rows)
        held = np.flatnonzero(folds == fold)
        model = TfidfBaseline(label_names=labels, word_ngram_range=word_ngram_range).fit(
            [r["text"] for r in train], [r["targets"] for r in train])
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
    from training.tagger import train_tagger

    out = np.zeros((len(rows), len(taxonomy)), dtype=np.float32)
    bank: dict = {}  # one experiment, one frozen-layer config: the lower layers run once per paragraph
    seconds = []
    work = Path(tempfile.mkdtemp(prefix="policylens-cv-"))
    try:
        for fold in np.unique(folds):
            started = time.time()
            splits = fold_splits(rows, folds, fold, cv, extra)
            held = np.flatnonzero(folds == fold)
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
    lexical_extra: Sequence[dict] | None = None,
) -> OutOfFold:
    """Out-of-fold scores of every system in `cv.systems` on the same document folds.

    `extra` rows (for instance the noisier batch 4) join every training fold and never a test fold;
    `lexical_extra` (default: `extra`) are the TF-IDF model's own, as the default tagger's lexical half
    learns from batch 4 while its encoder does not.
    """
    from training.tagger import TaggerConfig

    cv = cv or CVConfig()
    tagger_config = tagger_config or TaggerConfig()
    rows = list(rows)
    y = np.asarray([r["targets"] for r in rows], dtype=int)
    result = OutOfFold(labels=taxonomy.ids, y=y, folds=document_folds(rows, cv.folds, cv.seed))
    for system in cv.systems:
        started = time.time()
        if system == "keyword":
            result.scores[system] = oof_keyword(rows, taxonomy)
        elif system in ("tfidf", "lexical"):
            words = tagger_config.lexical_word_ngrams if system == "lexical" else None
            result.scores[system] = oof_tfidf(rows, result.folds, taxonomy.ids,
                                              extra if lexical_extra is None else lexical_extra, words)
        else:
            result.scores[system], _ = oof_encoder(rows, result.folds, taxonomy, tagger_config, cv, extra, progress)
        result.seconds[system] = round(time.time() - started, 1)
        result.peak_rss_mb[system] = _peak_rss_mb()
    return result



def experiment_key(rows: Sequence[dict], extra: Sequence[dict], tagger_config, cv: CVConfig,
                   lexical_extra: Sequence[dict] | None = None) -> str:
    """What decides the OOF scores: the data, the folds and the training settings."""
    import hashlib
    import json
    from dataclasses import asdict

    from training.tagger.data import data_fingerprint

    data = {"rows": list(rows), "extra": list(extra)}
    if lexical_extra is not None:
        data["lexical_extra"] = list(lexical_extra)
    settings = {"data": data_fingerprint(data), "folds": cv.folds,
                "seed": cv.seed, "inner_dev": cv.inner_dev,
                "tagger": {k: v for k, v in asdict(tagger_config).items()
                           if k not in ("num_threads", "ensemble") + LEXICAL_ONLY}}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def system_keys(key: str, systems: Sequence[str], taxonomy: Taxonomy, tagger_config=None) -> dict[str, str]:
    """Each system's key: the experiment's, plus what only that system depends on (TF-IDF's settings, the
    keyword lists), so changing one of those recomputes that system and keeps the encoder's saved folds."""
    import hashlib
    import json

    from training.baselines import TfidfBaseline
    from training.tagger import TaggerConfig

    words = (tagger_config or TaggerConfig()).lexical_word_ngrams
    own = {"encoder": None, "tfidf": TfidfBaseline().get_params(),
           "lexical": TfidfBaseline(word_ngram_range=words).get_params(),
           "keyword": {label.id: list(label.keywords) for label in taxonomy.labels}}
    return {system: key if own.get(system) is None else
            hashlib.sha256(json.dumps([key, system, own[system]], sort_keys=True, default=str).encode()).hexdigest()[:16]
            for system in systems}


def run_experiment(
    rows: Sequence[dict],
    taxonomy: Taxonomy,
    out_dir: str | Path,
    tagger_config=None,
    cv: CVConfig | None = None,
    extra: Sequence[dict] = (),
    reuse: bool = True,
    progress: bool = True,
    lexical_extra: Sequence[dict] | None = None,
) -> tuple[OutOfFold, dict[str, Any]]:
    """Cross-validate, save the OOF scores and the report in `out_dir`; with `reuse`, a system whose
    scores were saved there for the same data, folds and settings is not trained again."""
    from training.cv_report import (
        cv_markdown,
        cv_report,
        load_oof,
        row_slices,
        save_oof,
    )
    from training.tagger import TaggerConfig

    cv = cv or CVConfig()
    tagger_config = tagger_config or TaggerConfig()
    out_dir = Path(out_dir)
    key = experiment_key(rows, extra, tagger_config, cv, lexical_extra)
    keys = system_keys(key, cv.systems, taxonomy, tagger_config)
    saved: OutOfFold | None = None
    saved_keys: dict[str, str] = {}
    if reuse and (out_dir / "oof.json").exists():
        saved, info = load_oof(out_dir / "oof")
        saved_keys = info.get("keys") or {s: info.get("key") for s in saved.scores}  # older runs: one key for all
    todo = tuple(s for s in cv.systems if saved is None or s not in saved.scores or saved_keys.get(s) != keys[s])
    oof = (cross_validate(rows, taxonomy, tagger_config, replace(cv, systems=todo), extra, progress, lexical_extra)
           if todo else saved)
    if saved is not None and todo:
        for system in cv.systems:
            if system not in todo:
                oof.scores[system] = saved.scores[system]
                oof.seconds[system] = saved.seconds.get(system, 0.0)
                oof.peak_rss_mb[system] = saved.peak_rss_mb.get(system, 0.0)
    save_oof(oof, out_dir / "oof", {"key": key, "keys": keys, "rows": len(rows), "extra_rows": len(extra),
                                    "lexical_extra_rows": len(extra if lexical_extra is None else lexical_extra)})
    report = cv_report(oof, row_slices(list(rows)))
    from policylens.io import atomic_write, write_json

    write_json(out_dir / "report.json", report)
    with atomic_write(out_dir / "report.md") as handle:
        handle.write(f"# {cv.folds}-fold cross-validation, grouped by document ({len(rows)} paragraphs)\n\n")
        handle.write(cv_markdown(report, taxonomy.ids) + "\n")
    return oof, report
