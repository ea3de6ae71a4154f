"""News body -> headline pairs: the summariser's large training set."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policylens.chinese import normalize
from policylens.document import Document
from policylens.io import read_jsonl
from policylens.paths import HEADLINES_PATH


@dataclass(frozen=True)
class NewsPair:
    index: int  # line order in the file: a stable id
    date: str
    headline: str
    body: str

    def document(self) -> Document:
        return Document(id=f"news-{self.index}", text=self.body, source="news_headlines")


def load_news_pairs(path: str | Path = HEADLINES_PATH) -> list[NewsPair]:
    """Rows with a headline and a body, normalised to Simplified."""
    pairs = []
    for lineno, row in read_jsonl(path):
        headline, body = str(row.get("title") or "").strip(), str(row.get("body") or "").strip()
        if headline and body:
            pairs.append(NewsPair(lineno, str(row.get("date") or ""), normalize(headline), body))
    return pairs


def split_by_date(pairs: Sequence[NewsPair], dev_size: int = 1000, train_size: int | None = 4000,
                  seed: int = 13) -> tuple[list[NewsPair], list[NewsPair]]:
    """(train, dev): dev is the latest dates (whole days, ~dev_size items); train is
    sampled from strictly earlier days, so no day's stories leak across."""
    ordered = sorted(pairs, key=lambda p: (p.date, p.index))
    if not ordered:
        return [], []
    cutoff = ordered[max(len(ordered) - dev_size, 0)].date
    dev = [p for p in ordered if p.date >= cutoff]
    train = [p for p in ordered if p.date < cutoff]
    if train_size is not None and len(train) > train_size:
        train = sorted(random.Random(seed).sample(train, train_size), key=lambda p: (p.date, p.index))
    return train, dev


def spread(items: Sequence[Any], n: int | None) -> list[Any]:
    """n items evenly spaced over `items` (all of them when n is None or too big): a
    deterministic subsample that still covers every date of a date-sorted split."""
    if n is None or n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]
