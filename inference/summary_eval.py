"""Evaluate the summarisers: held-out news against the headline, and policy documents against
written summaries, cross-validated.

News protocol: the news pairs are split by date; the latest days (~1,000 items,
never seen in training or epoch selection) are dev, and `max_docs` of them,
evenly spread over those days, are scored. Every system summarises the body
through the same `Summarizer.summarize` path the CLI uses, under the same
budget (1 sentence, then 3 sentences); the prediction is the extracted
sentences joined, the reference is the headline, and ROUGE-1/2/L F are
computed by the local `char_rouge` metric (characters, punctuation dropped).
The greedy oracle (ROUGE-1+2 against the headline) gives the ceiling.

Policy protocol (evaluate_policy): the 120 policy documents with written references are
dealt into k folds by document (policylens.summarizer.policy.cv_folds); for each fold a
scorer is trained on the news training split plus the other folds' documents (the
caller's `train_fold`, so this module never imports training code), and every
system summarises the held-out documents through `Summarizer.summarize`: the whole
document in 250 characters against the written summary (Lead-250, the first 250
characters cut mid-sentence, TextRank + position, the trained scorer, the greedy
oracle under the same budget), and each domain the references address in 120
characters against its reference sentence (the first sentences holding one of the
domain's keywords, the trained domain summary, the oracle). A domain summary that
says "not addressed" for a domain the references address scores 0. Numbers are
the mean over folds ± the standard deviation across folds.

Run: `policylens evaluate-summaries [--max-docs N] [--folds 5] [--out report.md]`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.summarize import SelectConfig, Summarizer, load_encoder
from policylens.encoders.e5 import encode_cached
from policylens.metrics import load_metric
from policylens.metrics.rouge import char_rouge_scores
from policylens.paths import SUMMARIZER_CACHE_DIR, SUMMARIZER_DIR
from policylens.summarizer.model_dir import SummarizerModel
from policylens.summarizer.news import NewsPair, load_news_pairs, split_by_date, spread
from policylens.summarizer.oracle import oracle_labels
from policylens.summarizer.units import sentence_units

DEV_SIZE = 1000
COMMAND = "policylens evaluate-summaries --max-docs {n}"


@dataclass
class Row:
    system: str
    budget: str
    rouge1: float
    rouge2: float
    rougeL: float
    chars: float  # mean prediction length


@dataclass
class Report:
    rows: list[Row]
    meta: dict[str, Any] = field(default_factory=dict)

    def table(self):
        from rich.table import Table

        view = Table(title=f"char ROUGE F on {self.meta.get('dev_docs')} held-out news items "
                           f"(dates {self.meta.get('dev_dates')})")
        for column in ("system", "budget", "ROUGE-1", "ROUGE-2", "ROUGE-L", "avg chars"):
            view.add_column(column, justify="left" if column in ("system", "budget") else "right")
        for r in self.rows:
            view.add_row(r.system, r.budget, f"{100 * r.rouge1:.2f}", f"{100 * r.rouge2:.2f}",
                         f"{100 * r.rougeL:.2f}", f"{r.chars:.0f}")
        return view

    def markdown(self) -> str:
        lines = [
            "# Summariser benchmark (character ROUGE F x 100)", "",
            f"- dev: {self.meta.get('dev_docs')} news items, dates {self.meta.get('dev_dates')} "
            f"(latest ~{DEV_SIZE} items held out by date; training used dates {self.meta.get('train_dates')})",
            "- reference: the headline; prediction: the extracted sentences joined",
            "- every system runs through `Summarizer.summarize` (same segmentation, sentence units, structural "
            "prior, selection) under the same budget: 1 sentence, then 3 sentences; Oracle = greedy ROUGE-1+2 "
            "oracle against the headline (<= 3 sentences), the ceiling for any extractive system",
            "- metric: local `char_rouge` (characters, punctuation dropped, F-measure, mean over items)",
            f"- command: `{self.meta.get('command')}`",
            f"- scorer training: {self.meta.get('train_seconds')} s; evaluation {self.meta.get('eval_seconds')} s",
            f"- trained minus Lead-1 (1 sentence), ROUGE-L x 100 per item: {self.meta.get('trained_vs_lead1')}",
            f"- short-text rule: the lead below {self.meta.get('short_text_chars')} body characters (learnt on the "
            "training dates' validation slice); by body length (trained without the rule vs Lead-1, ROUGE-L): "
            + "; ".join(f"{b['chars']} ({b['items']}): {b['trained']} vs {b['lead1']}"
                        for b in self.meta.get("by_length") or []), "",
            "| system | budget | ROUGE-1 | ROUGE-2 | ROUGE-L | avg chars |", "|---|---|---:|---:|---:|---:|",
        ]
        for r in self.rows:
            lines.append(f"| {r.system} | {r.budget} | {100 * r.rouge1:.2f} | {100 * r.rouge2:.2f} | "
                         f"{100 * r.rougeL:.2f} | {r.chars:.0f} |")
        return "\n".join(lines) + "\n"


def paired_bootstrap(a: Sequence[str], b: Sequence[str], references: Sequence[str], samples: int = 2000,
                     seed: int = 13) -> dict[str, float]:
    """Per-item ROUGE-L F of system a minus system b: mean, 95% bootstrap interval, wins/losses.
    Says whether a gap of a point or so is more than the luck of the sample."""
    import numpy as np

    diff = np.asarray([char_rouge_scores([x], [r])["rougeL"] - char_rouge_scores([y], [r])["rougeL"]
                       for x, y, r in zip(a, b, references)])
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(samples, len(diff)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": round(100 * float(diff.mean()), 2), "ci95_low": round(100 * float(low), 2),
            "ci95_high": round(100 * float(high), 2), "wins": int((diff > 0).sum()), "losses": int((diff < 0).sum()),
            "ties": int((diff == 0).sum())}


def _oracle(pair: NewsPair) -> str:
    units = sentence_units(pair.document())
    labels = oracle_labels([u.text for u in units], pair.headline)
    return "".join(u.text for u, keep in zip(units, labels) if keep)


def evaluate_summaries(max_docs: int = 500, *, model_dir: str | Path | None = None,
                       pairs: Sequence[NewsPair] | None = None, encoder: Any = None,
                       dev_size: int = DEV_SIZE, cache_dir: Path = SUMMARIZER_CACHE_DIR,
                       log: Callable[[str], None] = print) -> Report:
    """Score every system on the dev split with a trained summariser; returns the report."""
    model_dir = Path(model_dir or SUMMARIZER_DIR)
    pairs = list(pairs) if pairs is not None else load_news_pairs()
    _, dev_pairs = split_by_date(pairs, dev_size=dev_size, train_size=None)
    scorer = SummarizerModel.load(model_dir)
    notes: list[str] = []
    encoder = encoder or load_encoder(scorer, None, None, notes)
    for note in notes:
        log(f"  note: {note}")
    trained_until = (scorer.meta.get("data") or {}).get("train_dates", [None, None])[1]
    if trained_until and trained_until >= dev_pairs[0].date:
        raise ValueError(f"{model_dir} was trained on dates up to {trained_until}, inside the dev split "
                         f"(from {dev_pairs[0].date}); retrain it with `policylens train-summarizer`")
    dev = spread(dev_pairs, max_docs)
    started = time.perf_counter()
    texts = [u.text for p in dev for u in sentence_units(p.document())]
    log(f"dev: {len(dev)} items, {len(texts)} sentences")
    summarizer = Summarizer(encoder, scorer)
    summarizer.encoder.prime(texts, encode_cached(summarizer.encoder, texts, cache_dir, log=log))
    classic = Summarizer(summarizer.encoder, scorer, config=SelectConfig(textrank_position_bias=0.0))
    no_rule = Summarizer(summarizer.encoder, scorer, config=SelectConfig(short_text_rule=False))
    metric = load_metric("char_rouge")
    references = [p.headline for p in dev]
    systems: list[tuple[str, Summarizer, str, str, int]] = [
        ("Lead-1", summarizer, "lead", "1 sentence", 1),
        ("TextRank (classic)", classic, "textrank", "1 sentence", 1),
        ("TextRank + position (fallback)", summarizer, "textrank", "1 sentence", 1),
        ("Trained scorer, no short-text rule", no_rule, "trained", "1 sentence", 1),
        ("Trained scorer", summarizer, "trained", "1 sentence", 1),
        ("Lead-3", summarizer, "lead", "3 sentences", 3),
        ("TextRank (classic)", classic, "textrank", "3 sentences", 3),
        ("TextRank + position (fallback)", summarizer, "textrank", "3 sentences", 3),
        ("Trained scorer", summarizer, "trained", "3 sentences", 3),
    ]
    rows = []
    picked: dict[str, list[str]] = {}
    for name, system, method, budget, n in systems:
        predictions = [system.summarize(p.document(), method=method, max_sentences=n).extract for p in dev]
        picked[f"{name}|{budget}"] = predictions
        scores = metric.compute(predictions=predictions, references=references)
        rows.append(Row(name, budget, scores["rouge1"], scores["rouge2"], scores["rougeL"],
                        sum(map(len, predictions)) / max(len(predictions), 1)))
        log(f"  {name:<31} {budget:<12} R-L {100 * scores['rougeL']:.2f}")
    predictions = [_oracle(p) for p in dev]
    scores = metric.compute(predictions=predictions, references=references)
    rows.append(Row("Oracle (ceiling)", "greedy, <= 3", scores["rouge1"], scores["rouge2"], scores["rougeL"],
                    sum(map(len, predictions)) / max(len(predictions), 1)))
    paired = paired_bootstrap(picked["Trained scorer|1 sentence"], picked["Lead-1|1 sentence"], references)
    log(f"  trained - Lead-1 (1 sentence) ROUGE-L: {paired}")
    by_length = _by_length(dev, picked["Trained scorer, no short-text rule|1 sentence"], picked["Lead-1|1 sentence"],
                           references)
    data = scorer.meta.get("data") or {}
    meta = {
        "dev_docs": len(dev), "dev_dates": f"{dev[0].date}..{dev[-1].date}",
        "train_dates": "..".join(data.get("train_dates") or []), "train_docs": data.get("train_docs"),
        "train_seconds": scorer.meta.get("train_seconds"), "encode_and_train_seconds": scorer.meta.get("total_seconds"),
        "eval_seconds": round(time.perf_counter() - started, 1), "command": COMMAND.format(n=max_docs),
        "trained_vs_lead1": paired, "short_text_chars": scorer.short_text_chars, "by_length": by_length,
    }
    return Report(rows, meta)


LENGTH_BINS = (0, 150, 200, 300, 500, 1000, 10**9)


def _by_length(dev: Sequence[NewsPair], trained: Sequence[str], lead: Sequence[str],
               references: Sequence[str]) -> list[dict[str, Any]]:
    """Trained (no short-text rule) vs Lead-1 ROUGE-L by body length: where the lead cannot be beaten."""
    rows = []
    lengths = [sum(len(u.text) for u in sentence_units(p.document())) for p in dev]
    for low, high in zip(LENGTH_BINS, LENGTH_BINS[1:]):
        idx = [i for i, n in enumerate(lengths) if low <= n < high]
        if not idx:
            continue
        t = char_rouge_scores([trained[i] for i in idx], [references[i] for i in idx])["rougeL"]
        lead_r = char_rouge_scores([lead[i] for i in idx], [references[i] for i in idx])["rougeL"]
        rows.append({"chars": f"{low}-{high if high < 10**9 else ''}", "items": len(idx),
                     "trained": round(100 * t, 2), "lead1": round(100 * lead_r, 2)})
    return rows




# ----------------------------------------------------------------------------
# policy documents, cross-validated
# ----------------------------------------------------------------------------

POLICY_COMMAND = "policylens evaluate-summaries --folds {k}"


def first_keyword_sentences(units: Sequence[Any], keywords: Sequence[str], max_chars: int) -> str:
    """The baseline for domain summaries: the document's first sentences that hold one of the
    domain's keywords, in order, while they fit `max_chars` (a longer first one alone)."""
    hits = [u for u in units if any(k.lower() in u.text.lower() for k in keywords)]
    picked, used = [], 0
    for unit in hits:
        if picked and used + len(unit.text) > max_chars:
            continue
        if not picked and len(unit.text) > max_chars and any(len(u.text) <= max_chars for u in hits):
            continue
        picked.append(unit.text)
        used += len(unit.text)
    return "".join(picked)


@dataclass
class PolicyRow:
    system: str
    task: str  # "summary" (whole document, 250 chars) or "domain" (per-domain, 120 chars)
    folds: list[dict[str, float]]  # per fold: rouge1, rouge2, rougeL, chars, n
    pooled: dict[str, float] = field(default_factory=dict)  # over every item of every fold

    def mean_std(self, key: str = "rougeL") -> tuple[float, float]:
        import numpy as np

        values = np.asarray([f[key] for f in self.folds], dtype=float)
        return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


@dataclass
class PolicyReport:
    rows: list[PolicyRow]
    meta: dict[str, Any] = field(default_factory=dict)

    def row(self, system: str, task: str) -> PolicyRow:
        return next(r for r in self.rows if r.system == system and r.task == task)

    def _lines(self, task: str) -> list[str]:
        lines = ["| system | ROUGE-L (mean ± std over folds) | ROUGE-1 | ROUGE-2 | avg chars |",
                 "|---|---:|---:|---:|---:|"]
        for r in (r for r in self.rows if r.task == task):
            m, sd = r.mean_std()
            lines.append(f"| {r.system} | {100 * m:.2f} ± {100 * sd:.2f} | {100 * r.mean_std('rouge1')[0]:.2f} | "
                         f"{100 * r.mean_std('rouge2')[0]:.2f} | {r.mean_std('chars')[0]:.0f} |")
        return lines

    def markdown(self) -> str:
        m = self.meta
        lines = [
            "# Summariser on policy documents (character ROUGE F x 100, cross-validated)", "",
            f"- {m.get('documents')} policy documents with written references ({m.get('domain_pairs')} per-domain "
            f"reference sentences), {m.get('folds')} folds grouped by document; each fold's scorer trained on the "
            "news training split plus the other folds' documents; never tuned on the held-out fold",
            f"- command: `{m.get('command')}`; {m.get('seconds')} s",
            f"- trained minus Lead-250 per document, ROUGE-L x 100 (pooled over folds): {m.get('trained_vs_lead')}",
            f"- domain summaries minus first keyword sentences per pair: {m.get('domain_vs_keywords')}",
            f"- 'not addressed' decisions on every (document, domain) pair: {m.get('addressed')}", "",
            "## Whole document, 250 characters, against the written summary", "", *self._lines("summary"), "",
            "## Per domain, 120 characters, against the domain's reference sentence", "", *self._lines("domain"),
        ]
        return "\n".join(lines) + "\n"

    def table(self):
        from rich.table import Table

        view = Table(title=f"policy documents, {self.meta.get('folds')}-fold CV (char ROUGE F x 100)")
        for column in ("task", "system", "ROUGE-L", "± std", "ROUGE-1", "ROUGE-2", "avg chars"):
            view.add_column(column, justify="left" if column in ("task", "system") else "right")
        for r in self.rows:
            m, sd = r.mean_std()
            view.add_row(r.task, r.system, f"{100 * m:.2f}", f"{100 * sd:.2f}", f"{100 * r.mean_std('rouge1')[0]:.2f}",
                         f"{100 * r.mean_std('rouge2')[0]:.2f}", f"{r.mean_std('chars')[0]:.0f}")
        return view


def _scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    scores = char_rouge_scores(list(predictions), list(references))
    return {"rouge1": scores["rouge1"], "rouge2": scores["rouge2"], "rougeL": scores["rougeL"],
            "chars": sum(map(len, predictions)) / max(len(predictions), 1), "n": len(predictions)}


def evaluate_policy(items: Sequence[Any], *, train_fold: Callable[[Sequence[Any]], SummarizerModel], encoder: Any,
                    k: int = 5, config: SelectConfig | None = None, cache_dir: Path | None = SUMMARIZER_CACHE_DIR,
                    summary_chars: int = 250, domain_chars: int = 120,
                    log: Callable[[str], None] = print) -> PolicyReport:
    """k-fold cross-validation over policy documents (see the module docstring); `items` are
    policylens.summarizer.policy.PolicyItem, `train_fold(train_items)` returns a trained
    SummarizerModel (with its domain heads in meta) that never saw the held-out fold."""
    from policylens.summarizer.embedding_cache import CachedEncoder
    from policylens.summarizer.policy import cv_folds
    from policylens.taxonomy import Taxonomy

    started = time.perf_counter()
    taxonomy = Taxonomy.load()
    keywords = {label.id: label.keywords for label in taxonomy.labels}
    fold_of = cv_folds(items, k)
    cached = encoder if isinstance(encoder, CachedEncoder) else CachedEncoder(encoder)
    units = {item.doc_id: sentence_units(item.document()) for item in items}
    texts = [u.text for us in units.values() for u in us]
    log(f"policy: {len(items)} documents, {len(texts)} sentences, {k} folds")
    if cache_dir is not None:
        cached.prime(texts, encode_cached(cached, texts, cache_dir, log=log))
    names = {"lead": "Lead-250 (lead sentences)", "cut": "First 250 characters (cut mid-sentence)",
             "textrank": "TextRank + position", "trained": "Trained scorer", "oracle": "Greedy oracle (ceiling)",
             "kw": "First keyword sentences", "domain": "Trained domain summary", "doracle": "Greedy oracle (ceiling)"}
    per_fold: dict[str, list[dict[str, float]]] = {key: [] for key in names}
    pooled: dict[str, list[str]] = {key: [] for key in names}
    refs_all: dict[str, list[str]] = {"summary": [], "domain": []}
    decisions = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for fold in range(k):
        train = [item for item, f in zip(items, fold_of) if f != fold]
        test = [item for item, f in zip(items, fold_of) if f == fold]
        log(f"fold {fold + 1}/{k}: train on {len(train)} documents (+ news), test on {len(test)}")
        model = train_fold(train)
        summarizer = Summarizer(cached, model, config=config)
        preds: dict[str, list[str]] = {key: [] for key in names}
        refs, domain_refs = [], []
        for item in test:
            document, us = item.document(), units[item.doc_id]
            refs.append(item.summary)
            preds["lead"].append(summarizer.summarize(document, method="lead", max_chars=summary_chars).extract)
            preds["cut"].append("".join(u.text for u in us)[:summary_chars])
            preds["textrank"].append(summarizer.summarize(document, method="textrank", max_chars=summary_chars).extract)
            preds["trained"].append(summarizer.summarize(document, method="trained", max_chars=summary_chars).extract)
            labels = oracle_labels([u.text for u in us], item.summary, max_selected=10, max_chars=summary_chars)
            preds["oracle"].append("".join(u.text for u, keep in zip(us, labels) if keep))
            for domain in taxonomy.ids:
                result = summarizer.summarize(document, method="trained", domain=domain, max_chars=domain_chars)
                addressed, truth = bool(result.addressed), domain in item.domains
                decisions[("t" if addressed == truth else "f") + ("p" if addressed else "n")] += 1
                if not truth:
                    continue
                domain_refs.append(item.domains[domain])
                preds["kw"].append(first_keyword_sentences(us, keywords[domain], domain_chars))
                preds["domain"].append(result.extract)
                labels = oracle_labels([u.text for u in us], item.domains[domain], max_selected=3, max_chars=domain_chars)
                preds["doracle"].append("".join(u.text for u, keep in zip(us, labels) if keep))
        for key in names:
            target = domain_refs if key in ("kw", "domain", "doracle") else refs
            per_fold[key].append(_scores(preds[key], target))
            pooled[key].extend(preds[key])
        refs_all["summary"].extend(refs)
        refs_all["domain"].extend(domain_refs)
        log("  " + "  ".join(f"{key} {100 * per_fold[key][-1]['rougeL']:.1f}" for key in names))
    rows = []
    for key, name in names.items():
        task = "domain" if key in ("kw", "domain", "doracle") else "summary"
        rows.append(PolicyRow(name, task, per_fold[key], _scores(pooled[key], refs_all[task])))
    tp, fp, fn, tn = (decisions[x] for x in ("tp", "fp", "fn", "tn"))
    meta = {
        "documents": len(items), "domain_pairs": len(refs_all["domain"]), "folds": k,
        "command": POLICY_COMMAND.format(k=k), "seconds": round(time.perf_counter() - started, 1),
        "trained_vs_lead": paired_bootstrap(pooled["trained"], pooled["lead"], refs_all["summary"]),
        "domain_vs_keywords": paired_bootstrap(pooled["domain"], pooled["kw"], refs_all["domain"]),
        "addressed": {"pairs": tp + fp + fn + tn, "accuracy": round((tp + tn) / max(tp + fp + fn + tn, 1), 3),
                      "precision": round(tp / max(tp + fp, 1), 3), "recall": round(tp / max(tp + fn, 1), 3),
                      "tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }
    return PolicyReport(rows, meta)
