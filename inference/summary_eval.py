"""Evaluate the summarisers on held-out news: character ROUGE against the headline.

Protocol: the news pairs are split by date; the latest days (~1,000 items,
never seen in training or epoch selection) are dev, and `max_docs` of them,
evenly spread over those days, are scored. Every system summarises the body
through the same `Summarizer.summarize` path the CLI uses, under the same
budget (1 sentence, then 3 sentences); the prediction is the extracted
sentences joined, the reference is the headline, and ROUGE-1/2/L F are
computed by the local `char_rouge` metric (characters, punctuation dropped).
The greedy oracle (ROUGE-1+2 against the headline) gives the ceiling.

Run: `policylens evaluate-summaries [--max-docs N] [--out report.md]`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.summarize import SelectConfig, Summarizer
from policylens.encoders.e5 import SentenceEncoder, encode_cached
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
            f"- trained minus Lead-1 (1 sentence), ROUGE-L x 100 per item: {self.meta.get('trained_vs_lead1')}", "",
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
                       pairs: Sequence[NewsPair] | None = None, encoder: SentenceEncoder | None = None,
                       dev_size: int = DEV_SIZE, cache_dir: Path = SUMMARIZER_CACHE_DIR,
                       log: Callable[[str], None] = print) -> Report:
    """Score every system on the dev split with a trained summariser; returns the report."""
    model_dir = Path(model_dir or SUMMARIZER_DIR)
    pairs = list(pairs) if pairs is not None else load_news_pairs()
    _, dev_pairs = split_by_date(pairs, dev_size=dev_size, train_size=None)
    encoder = encoder or SentenceEncoder(None)
    scorer = SummarizerModel.load(model_dir)
    trained_until = (scorer.meta.get("data") or {}).get("train_dates", [None, None])[1]
    if trained_until and trained_until >= dev_pairs[0].date:
        raise ValueError(f"{model_dir} was trained on dates up to {trained_until}, inside the dev split "
                         f"(from {dev_pairs[0].date}); retrain it with `policylens train-summarizer`")
    dev = spread(dev_pairs, max_docs)
    started = time.perf_counter()
    texts = [u.text for p in dev for u in sentence_units(p.document())]
    log(f"dev: {len(dev)} items, {len(texts)} sentences")
    encoder.prime(texts, encode_cached(encoder, texts, cache_dir, log=log))
    summarizer = Summarizer(encoder, scorer)
    classic = Summarizer(encoder, scorer, config=SelectConfig(textrank_position_bias=0.0))
    metric = load_metric("char_rouge")
    references = [p.headline for p in dev]
    systems: list[tuple[str, Summarizer, str, str, int]] = [
        ("Lead-1", summarizer, "lead", "1 sentence", 1),
        ("TextRank (classic)", classic, "textrank", "1 sentence", 1),
        ("TextRank + position (fallback)", summarizer, "textrank", "1 sentence", 1),
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
    data = scorer.meta.get("data") or {}
    meta = {
        "dev_docs": len(dev), "dev_dates": f"{dev[0].date}..{dev[-1].date}",
        "train_dates": "..".join(data.get("train_dates") or []), "train_docs": data.get("train_docs"),
        "train_seconds": scorer.meta.get("train_seconds"), "encode_and_train_seconds": scorer.meta.get("total_seconds"),
        "eval_seconds": round(time.perf_counter() - started, 1), "command": COMMAND.format(n=max_docs),
        "trained_vs_lead1": paired,
    }
    return Report(rows, meta)


