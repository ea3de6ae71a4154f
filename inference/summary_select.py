"""Choosing a summary's sentences once they are scored: budget, structural prior, MMR selection.

Kept apart from the Summarizer (inference/summarize.py) so the selection rules
can be read, tuned and tested without the encoder or scorer: policy texts are
structured, so a small prior (policylens/summarizer/structure.py, shared with the
scorer's features) prefers run-in measure titles, section openings and target
statements and avoids boilerplate; selection applies MMR + character-trigram
blocking under a length budget.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from policylens.document import Document
from policylens.summarizer.structure import structure_prior
from policylens.summarizer.units import SentenceUnit

__all__ = ["Budget", "SelectConfig", "domain_coverage", "minmax", "select", "structure_prior"]


@dataclass
class Budget:
    """Length budget: stop at whichever limit comes first (None = no limit on that axis).

    max_chars counts normalised characters; a sentence longer than the whole
    budget is only taken when no candidate fits (a summary is never empty)."""

    max_chars: int | None = None
    max_sentences: int | None = None

    def __post_init__(self) -> None:
        if self.max_chars is not None and self.max_chars < 1:
            raise ValueError(f"max_chars must be >= 1, got {self.max_chars}")
        if self.max_sentences is not None and self.max_sentences < 1:
            raise ValueError(f"max_sentences must be >= 1, got {self.max_sentences}")

    @classmethod
    def auto(cls, body_chars: int) -> "Budget":
        """~6% of the body, between 120 and 500 characters: a paragraph for news, a page-third for reports."""
        return cls(max_chars=int(min(500, max(120, 0.06 * body_chars))))


@dataclass
class SelectConfig:
    """How sentences are chosen once scored."""

    redundancy: float = 0.5  # MMR weight of the (rescaled) max similarity to already chosen sentences
    similarity_floor: float = 0.88  # e5 cosine below this counts as unrelated (unrelated policy prose sits ~0.8)
    trigram_block: float = 0.5  # drop a sentence whose char trigrams are this much contained in the chosen ones
    structure: float = 1.0  # weight of the structural prior for TextRank (0 = off)
    trained_structure: float = 1.0  # ... for the trained scorer (which also sees the structure as features)
    long_doc_chars: int = 6000  # above this (and with >= 2 sections): per-section summaries too
    section_sentences: int = 3  # per-section summary length (+1 per 25% of the text)
    min_section_share: float = 0.02  # smaller sections get no summary of their own
    textrank_position_bias: float = 1.0  # 0 = classic TextRank; 1 = teleport to early sentences (1/(1+i))
    domain_chars: int = 120  # default budget of a domain summary (the per-domain references are 40-120 characters)
    short_text_rule: bool = True  # the trained summariser returns the lead below the scorer's short_text length

    def __post_init__(self) -> None:
        if not 0 <= self.redundancy <= 2 or not 0 <= self.similarity_floor < 1:
            raise ValueError("redundancy in [0, 2], similarity_floor in [0, 1)")
        if not 0 < self.trigram_block <= 1 or self.structure < 0 or self.textrank_position_bias < 0:
            raise ValueError("trigram_block in (0, 1], structure >= 0, textrank_position_bias >= 0")
        if self.domain_chars < 1 or self.trained_structure < 0:
            raise ValueError(f"domain_chars must be >= 1 and trained_structure >= 0, got {self.domain_chars}, "
                             f"{self.trained_structure}")
        if self.long_doc_chars < 1 or self.section_sentences < 1 or not 0 <= self.min_section_share < 1:
            raise ValueError("long_doc_chars, section_sentences >= 1 and min_section_share in [0, 1)")


# ----------------------------------------------------------------------------
# selection
# ----------------------------------------------------------------------------


def _trigrams(text: str) -> set[str]:
    chars = re.sub(r"\W", "", text)
    return {chars[i : i + 3] for i in range(len(chars) - 2)} or {chars}


def minmax(x: np.ndarray) -> np.ndarray:
    """Rescale to [0, 1] so scores of different methods add to the prior on one scale; all 0.5 when flat."""
    if len(x) == 0:
        return x
    span = float(x.max() - x.min())
    return (x - x.min()) / span if span > 1e-9 else np.full_like(x, 0.5)


def select(units: Sequence[SentenceUnit], scores: np.ndarray, embeddings: np.ndarray | None, budget: Budget,
           config: SelectConfig, *, use_mmr: bool = True) -> list[int]:
    """Indices of the chosen sentences in document order (MMR + trigram blocking + budget).

    Vectorised over candidates (a policy document has hundreds of sentences): each pick updates
    every candidate's maximum similarity to the chosen ones in one matrix-vector product."""
    n = len(units)
    chosen: list[int] = []
    if n == 0:
        return chosen
    scores = np.asarray(scores, dtype=np.float64)
    lengths = np.asarray([len(u.text) for u in units])
    available = np.ones(n, dtype=bool)
    mmr = use_mmr and embeddings is not None
    max_sim = np.full(n, -np.inf)
    grams: dict[int, set[str]] = {}
    chosen_grams: set[str] = set()
    used_chars = 0
    while available.any():
        if budget.max_sentences is not None and len(chosen) >= budget.max_sentences:
            break
        candidates = available.copy()
        if budget.max_chars is not None and chosen:
            candidates &= used_chars + lengths <= budget.max_chars
        if not candidates.any():
            break
        values = scores.copy()
        if mmr and chosen:
            values -= config.redundancy * np.clip(max_sim - config.similarity_floor, 0.0, None) / (
                1 - config.similarity_floor)
        values[~candidates] = -np.inf
        best = int(np.argmax(values))
        available[best] = False
        if best not in grams:
            grams[best] = _trigrams(units[best].text)
        if chosen and len(grams[best] & chosen_grams) / len(grams[best]) >= config.trigram_block:
            continue  # says again what is already said
        if not chosen and budget.max_chars is not None and lengths[best] > budget.max_chars:
            fitting = available & (lengths <= budget.max_chars)
            if fitting.any():  # the best sentence is over budget on its own: take the best one that fits
                best = int(np.argmax(np.where(fitting, scores, -np.inf)))
                available[best] = False
                grams.setdefault(best, _trigrams(units[best].text))
        chosen.append(best)
        chosen_grams |= grams[best]
        used_chars += int(lengths[best])
        if mmr:
            max_sim = np.maximum(max_sim, embeddings @ embeddings[best])
    return sorted(chosen, key=lambda i: units[i].start)


# ----------------------------------------------------------------------------
# domains
# ----------------------------------------------------------------------------


def domain_coverage(document: Document, labels: Mapping[str, Sequence[str]]) -> tuple[dict[str, float], dict[str, int]]:
    """Share of body characters, and number of body paragraphs, tagged with each domain."""
    body = [p for p in document.paragraphs if p.kind == "body"]
    total = sum(len(p.text) for p in body) or 1
    chars: dict[str, int] = {}
    counts: dict[str, int] = {}
    for paragraph in body:
        for label in labels.get(paragraph.id, ()):
            chars[label] = chars.get(label, 0) + len(paragraph.text)
            counts[label] = counts.get(label, 0) + 1
    shares = {label: round(c / total, 4) for label, c in sorted(chars.items(), key=lambda kv: -kv[1])}
    return shares, {label: counts[label] for label in shares}
