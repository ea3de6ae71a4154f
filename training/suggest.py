"""What to label next: uncertain paragraphs, spread out so a batch is not 50 near-copies.

Uncertainty is 1 - min over labels of |p - threshold| / (distance to the far
end), i.e. 1 when some label sits exactly on its threshold. The batch is picked
greedily: each step takes the paragraph maximising
`weight * uncertainty + (1 - weight) * distance to the nearest picked one`
(cosine distance on char 2-3-gram TF-IDF, which needs no model and suits
Chinese without word segmentation). Without a model, only diversity counts.

A new domain has no model yet, so uncertainty cannot find it: with `like`
examples (a few paragraphs the analyst wrote or picked), the score is instead
each paragraph's largest cosine similarity to an example, on mean-pooled e5
embeddings of the backbone (examples as queries, paragraphs as passages). The
same ranking over the label store's own paragraphs (`relabel_candidates`) finds
old paragraphs that the new domain covers, written as correction rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from policylens.hashing import text_hash
from policylens.io import write_jsonl


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


def similarity_to_examples(texts: Sequence[str], examples: Sequence[str], encoder) -> np.ndarray:
    """Per text, its largest cosine similarity to any example (embeddings are L2-normalised).

    The examples are embedded as e5 queries ("query: "), the texts as passages: on
    corpus paragraphs this ranked far more of a new domain's paragraphs first than
    passage-to-passage similarity, whose scores bunch up for any policy prose."""
    if not examples:
        raise ValueError("no example paragraphs to compare with")
    queries = np.stack([encoder.encode_query(text) for text in examples])
    return (encoder.encode(list(texts)) @ queries.T).max(axis=1)


def read_examples(path: str | Path) -> list[str]:
    """Example paragraphs: JSON Lines rows with a "text", or a plain-text file with one paragraph per line."""
    from policylens.io import InputError, read_jsonl

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such example file")
    if path.suffix == ".jsonl":
        texts = [str(row.get("text") or "").strip() for _, row in read_jsonl(path)]
    else:
        try:
            texts = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
        except UnicodeDecodeError as err:
            raise InputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    texts = [t for t in texts if t]
    if not texts:
        raise InputError(f"{path}: no example paragraphs (expected non-empty lines or JSON rows with \"text\")")
    return texts


def relabel_candidates(store_rows: Iterable[dict], config: SuggestConfig, skip_label: str | None = None) -> list[dict]:
    """The store's labelled paragraphs as correction rows: keep the labels, add the new domain where it applies.

    `skip_label` leaves out paragraphs that already carry it, so a second round
    of corrections does not show the first round's again."""
    return [{"id": row["id"], "doc_id": row.get("doc_id", ""), "source": row.get("source", ""), "text": row["text"],
             "labels": list(row["labels"]), "correction": True}
            for row in store_rows if len(row["text"]) >= config.min_chars and skip_label not in row["labels"]]


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
    like: Sequence[str] = (),
    backbone: str | None = None,
) -> list[dict]:
    """Unlabelled corpus paragraphs ready to label (`labels: []` to fill in), best first."""
    config = config or SuggestConfig()
    candidates = candidate_paragraphs(inputs, {text_hash(t) for t in known_texts}, config)
    return rank(candidates, model_dir, config, num_threads, like, backbone)


def rank(
    candidates: list[dict],
    model_dir: str | Path | None = None,
    config: SuggestConfig | None = None,
    num_threads: int | None = None,
    like: Sequence[str] = (),
    backbone: str | None = None,
) -> list[dict]:
    """Pick `config.n` candidates: by similarity to `like` examples if given, else by model uncertainty;
    each row gains the model's labels and scores as hints, and `labels` if it has none yet."""
    config = config or SuggestConfig()
    if not candidates:
        return []
    texts = [c["text"] for c in candidates]
    predictor, probs = None, None
    if model_dir is not None:
        from policylens.tagger.scoring import Tagger

        predictor = Tagger(model_dir, num_threads=num_threads)
    if like:
        from policylens.encoders.e5 import SentenceEncoder

        encoder = SentenceEncoder(backbone, num_threads=num_threads)
        key, score = "similarity", similarity_to_examples(texts, like, encoder)
    elif predictor is not None:
        probs = predictor.predict_proba(texts)
        key, score = "uncertainty", uncertainty(probs, predictor.meta.thresholds)
    else:
        key, score = "uncertainty", np.zeros(len(texts))
    pool = np.argsort(-score, kind="stable")[: config.n * config.pool_factor]
    weights = score[pool]
    if like and len(pool):  # cosine similarities bunch up (about 0.85-0.95): spread them over [0, 1] like uncertainty
        span = np.ptp(weights)
        weights = (weights - weights.min()) / span if span > 0 else np.zeros(len(pool))
    picked = [int(pool[i]) for i in diverse_pick([texts[i] for i in pool], weights, config.n, config.weight)]
    if predictor is not None:
        hints = probs[picked] if probs is not None else predictor.predict_proba([texts[i] for i in picked])
        labels, thresholds = predictor.labels, predictor.meta.thresholds
    else:
        hints, labels, thresholds = np.zeros((len(picked), 0)), [], []
    rows = []
    for i, p in zip(picked, hints):
        rows.append({
            **candidates[i],
            "suggested": [label for label, q, t in zip(labels, p, thresholds) if q >= t],
            "scores": {label: round(float(q), 4) for label, q in zip(labels, p)},
            key: round(float(score[i]), 4),
            "labels": candidates[i].get("labels", []),
        })
    return rows


def write_suggestions(rows: list[dict], path: str | Path) -> int:
    return write_jsonl(path, rows)
