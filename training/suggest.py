"""What to label next: uncertain paragraphs, spread out so a batch is not 50 near-copies.

Uncertainty is 1 - min over labels of |p - threshold| / (distance to the far
end), i.e. 1 when some label sits exactly on its threshold. The batch is picked
greedily: each step takes the paragraph maximising
`weight * uncertainty + (1 - weight) * distance to the nearest picked one`
(cosine distance on char 2-3-gram TF-IDF, which needs no model and suits
Chinese without word segmentation). Without a model, only diversity counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from policylens.io import write_jsonl
from training.store import text_hash


@dataclass
class SuggestConfig:
    n: int = 50
    weight: float = 0.5  # uncertainty vs diversity
    pool_factor: int = 10  # only the n * pool_factor most uncertain paragraphs compete
    min_chars: int = 15  # headings and fragments are poor labelling material
    max_docs: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1 or self.pool_factor < 1 or self.min_chars < 0:
            raise ValueError("n and pool_factor must be >= 1 and min_chars >= 0")
        if not 0 <= self.weight <= 1:
            raise ValueError(f"weight must be in [0, 1], got {self.weight}")


def uncertainty(probs: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Per paragraph, in [0, 1]: how close its least certain label is to that label's threshold."""
    t = np.asarray(thresholds, dtype=np.float64)
    span = np.where(probs >= t, 1.0 - t, t)  # distance from the threshold to 0 or 1 on that side
    margin = np.abs(probs - t) / np.maximum(span, 1e-6)
    return 1.0 - margin.min(axis=1)


def diverse_pick(texts: Sequence[str], scores: np.ndarray, n: int, weight: float = 0.5) -> list[int]:
    """Greedy max-min selection on char-n-gram TF-IDF, trading score against novelty."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if len(texts) == 0:
        return []
    vectors = TfidfVectorizer(analyzer="char", ngram_range=(2, 3), sublinear_tf=True).fit_transform(texts)
    picked = [int(np.argmax(scores))]
    nearest = 1.0 - (vectors @ vectors[picked[0]].T).toarray().ravel()  # cosine distance (rows are L2-normalised)
    while len(picked) < min(n, len(texts)):
        value = weight * scores + (1 - weight) * nearest
        value[picked] = -np.inf
        best = int(np.argmax(value))
        picked.append(best)
        nearest = np.minimum(nearest, 1.0 - (vectors @ vectors[best].T).toarray().ravel())
    return picked


def candidate_paragraphs(inputs: Iterable[str | Path], known_hashes: set[str], config: SuggestConfig) -> list[dict]:
    """Segmented, de-duplicated paragraphs of the inputs that are not labelled yet."""
    from policylens.ingest import IngestError, iter_inputs
    from policylens.segment import segment

    seen = set(known_hashes)
    out: list[dict] = []
    docs = 0
    for item in iter_inputs(list(inputs)):
        if isinstance(item, IngestError):
            continue
        docs += 1
        if config.max_docs and docs > config.max_docs:
            break
        for paragraph in segment(item):
            digest = text_hash(paragraph.text)
            if paragraph.kind != "body" or len(paragraph.text) < config.min_chars or digest in seen:
                continue
            seen.add(digest)
            out.append({"id": paragraph.id, "doc_id": paragraph.doc_id, "source": item.source or "", "text": paragraph.text})
    return out


def suggest(
    inputs: Iterable[str | Path],
    model_dir: str | Path | None = None,
    known_texts: Iterable[str] = (),
    config: SuggestConfig | None = None,
    num_threads: int | None = None,
) -> list[dict]:
    """Rows ready to label: id, doc_id, text, suggested labels, scores, uncertainty, and `labels: []` to fill in."""
    config = config or SuggestConfig()
    candidates = candidate_paragraphs(inputs, {text_hash(t) for t in known_texts}, config)
    if not candidates:
        return []
    texts = [c["text"] for c in candidates]
    if model_dir is not None:
        from inference.predictor import Predictor

        predictor = Predictor(model_dir, summarizer=None, num_threads=num_threads)
        probs = predictor.predict_proba(texts)
        thresholds, labels = predictor.meta.thresholds, predictor.labels
        unsure = uncertainty(probs, thresholds)
    else:
        probs, thresholds, labels = np.zeros((len(texts), 0)), [], []
        unsure = np.zeros(len(texts))
    pool = np.argsort(-unsure, kind="stable")[: config.n * config.pool_factor]
    picked = [int(pool[i]) for i in diverse_pick([texts[i] for i in pool], unsure[pool], config.n, config.weight)]
    rows = []
    for i in picked:
        scores = {label: round(float(p), 4) for label, p in zip(labels, probs[i])}
        rows.append({
            **candidates[i],
            "suggested": [label for label, p, t in zip(labels, probs[i], thresholds) if p >= t],
            "scores": scores,
            "uncertainty": round(float(unsure[i]), 4),
            "labels": [],
        })
    return rows


def write_suggestions(rows: list[dict], path: str | Path) -> int:
    return write_jsonl(path, rows)
