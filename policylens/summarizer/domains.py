"""Per-domain summaries: which sentences say what a document says about one domain, and whether it
says anything at all.

Why sentence evidence and not the tagger's paragraph labels: a paragraph tagged `sme`
still has sentences about other things, and the decision has to be the same in
training (where no tagger exists) and in serving. Each sentence gets a few numbers
(keyword hits of the domain, e5 similarity to a "query: <domain name>：<keywords>"
embedding, the general summary score, position, length); a logistic head trained on
the per-domain reference sentences turns them into a probability. A second logistic
head reads document-level evidence (how many sentences, how strong) and says whether
the document addresses the domain at all: when it does not, the summary says
"not addressed" instead of offering weak sentences.

Both heads are a handful of floats stored in summarizer.json (no pickle).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from policylens.summarizer.structure import structure_prior
from policylens.summarizer.units import SentenceUnit

SENTENCE_FEATURES = (
    "keyword_hit", "log_keyword_count", "distinct_keywords", "query_sim", "query_sim_rank", "summary_score",
    "rel_position", "log_chars", "paragraph_keyword_share", "structure_prior", "bias_free_sim",
)
DOCUMENT_FEATURES = (
    "log_keyword_sentences", "keyword_sentence_share", "max_query_sim", "top3_sentence_prob", "log_keyword_count",
)


def domain_query(name_zh: str, keywords: Sequence[str]) -> str:
    """The text embedded (as an e5 "query: ") to find a domain's sentences."""
    return f"{name_zh}：{'、'.join(keywords)}"


def keyword_counts(text: str, keywords: Sequence[str]) -> tuple[int, int]:
    """(occurrences, distinct keywords) of the domain's keywords in `text`, case-folded."""
    lowered = text.lower()
    counts = [lowered.count(k.lower()) for k in keywords if k]
    return sum(counts), sum(1 for c in counts if c)


def sentence_features(units: Sequence[SentenceUnit], keywords: Sequence[str], query_sims: np.ndarray,
                      summary_scores: np.ndarray | None = None) -> np.ndarray:
    """[n, len(SENTENCE_FEATURES)] evidence that each sentence speaks about the domain."""
    n = len(units)
    out = np.zeros((n, len(SENTENCE_FEATURES)), dtype=np.float32)
    if n == 0:
        return out
    counts = [keyword_counts(u.text, keywords) for u in units]
    by_paragraph: dict[str, list[int]] = {}
    for i, unit in enumerate(units):
        by_paragraph.setdefault(unit.paragraph_id, []).append(i)
    order = np.argsort(-query_sims, kind="stable")
    rank = np.empty(n, dtype=np.float32)
    rank[order] = np.arange(n, dtype=np.float32)
    centred = query_sims - float(np.mean(query_sims))
    scores = summary_scores if summary_scores is not None else np.zeros(n, dtype=np.float32)
    span = float(scores.max() - scores.min()) if n else 0.0
    scaled = (scores - scores.min()) / span if span > 1e-9 else np.full(n, 0.5, dtype=np.float32)
    for i, unit in enumerate(units):
        members = by_paragraph[unit.paragraph_id]
        out[i] = (
            float(counts[i][0] > 0),
            math.log1p(counts[i][0]),
            min(counts[i][1], 3) / 3.0,
            float(query_sims[i]),
            1.0 / (1.0 + rank[i]),
            float(scaled[i]),
            i / max(n - 1, 1),
            math.log1p(len(unit.text)) / 5.0,
            sum(counts[j][0] > 0 for j in members) / len(members),
            structure_prior(unit),
            float(centred[i]) * 10.0,
        )
    return out


def document_features(sentence_feats: np.ndarray, sentence_probs: np.ndarray) -> np.ndarray:
    """[len(DOCUMENT_FEATURES)] how much, and how strongly, the whole document speaks about the domain."""
    if len(sentence_feats) == 0:
        return np.zeros(len(DOCUMENT_FEATURES), dtype=np.float32)
    hits = sentence_feats[:, 0]
    top = np.sort(sentence_probs)[::-1][:3]
    return np.asarray([
        math.log1p(float(hits.sum())),
        float(hits.mean()),
        float(sentence_feats[:, 3].max()),
        float(top.mean()),
        math.log1p(float(np.expm1(sentence_feats[:, 1]).sum())),
    ], dtype=np.float32)


@dataclass
class LogisticHead:
    """sigmoid(x @ weights + bias) over standardised features (mean, scale stored with it)."""

    features: tuple[str, ...]
    weights: np.ndarray
    bias: float
    mean: np.ndarray
    scale: np.ndarray

    def __post_init__(self) -> None:
        self.features = tuple(self.features)
        self.weights = np.asarray(self.weights, dtype=np.float64)
        self.mean = np.asarray(self.mean, dtype=np.float64)
        self.scale = np.asarray(self.scale, dtype=np.float64)
        k = len(self.features)
        if not (self.weights.shape == self.mean.shape == self.scale.shape == (k,)):
            raise ValueError(f"a head over {k} features needs {k} weights, means and scales")
        if not (np.isfinite(self.weights).all() and math.isfinite(self.bias) and (self.scale > 0).all()):
            raise ValueError("head weights must be finite and scales positive")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = ((np.asarray(x, dtype=np.float64) - self.mean) / self.scale) @ self.weights + self.bias
        return (1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "weights": [round(float(w), 6) for w in self.weights],
                "bias": round(float(self.bias), 6), "mean": [round(float(m), 6) for m in self.mean],
                "scale": [round(float(s), 6) for s in self.scale]}

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], expected: Sequence[str]) -> "LogisticHead":
        if list(obj.get("features", [])) != list(expected):
            raise ValueError(f"head trained on features {obj.get('features')}, this code computes {list(expected)}")
        return cls(tuple(obj["features"]), obj["weights"], float(obj["bias"]), obj["mean"], obj["scale"])


@dataclass
class DomainHeads:
    """The sentence head (is this sentence the domain's summary?) and the document head (is the domain
    addressed at all?), the probability above which a domain counts as addressed, and how far below
    the best sentence's probability a further sentence may be and still join the summary."""

    sentence: LogisticHead
    document: LogisticHead
    threshold: float = 0.5
    min_relative: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1 or not 0 <= self.min_relative <= 1:
            raise ValueError(f"threshold must be in (0, 1) and min_relative in [0, 1], got {self.threshold}, "
                             f"{self.min_relative}")

    def to_dict(self) -> dict[str, Any]:
        return {"sentence": self.sentence.to_dict(), "document": self.document.to_dict(),
                "threshold": round(float(self.threshold), 4), "min_relative": round(float(self.min_relative), 4)}

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> "DomainHeads":
        return cls(LogisticHead.from_dict(obj["sentence"], SENTENCE_FEATURES),
                   LogisticHead.from_dict(obj["document"], DOCUMENT_FEATURES), float(obj.get("threshold", 0.5)),
                   float(obj.get("min_relative", 0.5)))


def pick_domain_sentences(units: Sequence[SentenceUnit], probs: np.ndarray, max_chars: int | None,
                          min_relative: float, max_sentences: int | None = None) -> list[int]:
    """Indices (document order) of the domain's summary: the most probable sentence that fits the
    budget, then further ones by probability while they fit and stay within `min_relative` of the
    best. A domain's reference is one sentence; a weak second sentence only dilutes it."""
    n = len(units)
    if n == 0:
        return []
    order = [int(i) for i in np.argsort(-probs, kind="stable")]
    fits = [i for i in order if max_chars is None or len(units[i].text) <= max_chars]
    first = fits[0] if fits else order[0]
    chosen, used = [first], len(units[first].text)
    floor = min_relative * float(probs[first])
    for i in order:
        if max_sentences is not None and len(chosen) >= max_sentences:
            break
        if i in chosen:
            continue
        if probs[i] < floor:
            break
        if max_chars is not None and used + len(units[i].text) > max_chars:
            continue
        chosen.append(i)
        used += len(units[i].text)
    return sorted(chosen, key=lambda i: units[i].start)


def untrained_heads() -> DomainHeads:
    """What to use before any head is trained: keyword hits first (similarity and position only break
    ties), and "addressed" from one keyword sentence on. Close to the first-keyword-sentences baseline."""
    ones_s, zeros_s = np.ones(len(SENTENCE_FEATURES)), np.zeros(len(SENTENCE_FEATURES))
    w_s = np.zeros(len(SENTENCE_FEATURES))
    w_s[SENTENCE_FEATURES.index("keyword_hit")] = 3.0
    w_s[SENTENCE_FEATURES.index("bias_free_sim")] = 0.05
    w_s[SENTENCE_FEATURES.index("rel_position")] = -0.5
    ones_d, zeros_d = np.ones(len(DOCUMENT_FEATURES)), np.zeros(len(DOCUMENT_FEATURES))
    w_d = np.zeros(len(DOCUMENT_FEATURES))
    w_d[DOCUMENT_FEATURES.index("log_keyword_sentences")] = 4.0
    return DomainHeads(LogisticHead(SENTENCE_FEATURES, w_s, -2.0, zeros_s, ones_s),
                       LogisticHead(DOCUMENT_FEATURES, w_d, -4.0 * math.log1p(0.5), zeros_d, ones_d))
