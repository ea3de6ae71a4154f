"""Choosing a summary's sentences once they are scored: budget, structural prior, MMR selection.

Kept apart from the Summarizer (inference/summarize.py) so the selection rules
can be read, tuned and tested without the encoder or scorer: policy texts are
structured, so a small prior prefers run-in measure titles, section openings
and target statements and avoids boilerplate; selection applies MMR +
character-trigram blocking under a length budget.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from policylens.document import Document
from policylens.summarizer.units import SentenceUnit


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
    structure: float = 1.0  # weight of the structural prior (0 = off)
    long_doc_chars: int = 6000  # above this (and with >= 2 sections): summarise per section first
    section_sentences: int = 3  # per-section summary length in hierarchical mode (+1 per 25% of the text)
    min_section_share: float = 0.02  # smaller sections get no summary of their own
    textrank_position_bias: float = 1.0  # 0 = classic TextRank; 1 = teleport to early sentences (1/(1+i))
    domain_weight: float = 0.6  # domain summaries: weight of the sentence's own relevance to the domain

    def __post_init__(self) -> None:
        if not 0 <= self.redundancy <= 2 or not 0 <= self.similarity_floor < 1:
            raise ValueError("redundancy in [0, 2], similarity_floor in [0, 1)")
        if not 0 < self.trigram_block <= 1 or self.structure < 0 or self.textrank_position_bias < 0:
            raise ValueError("trigram_block in (0, 1], structure >= 0, textrank_position_bias >= 0")
        if self.domain_weight < 0:
            raise ValueError(f"domain_weight must be >= 0, got {self.domain_weight}")
        if self.long_doc_chars < 1 or self.section_sentences < 1 or not 0 <= self.min_section_share < 1:
            raise ValueError("long_doc_chars, section_sentences >= 1 and min_section_share in [0, 1)")


# ----------------------------------------------------------------------------
# structural prior
# ----------------------------------------------------------------------------

_GOAL_SECTION = re.compile(r"总体要求|主要目标|发展目标|工作目标|预期目标|总体目标|目标任务|主要任务|重点任务|政策取向")
_TARGET = re.compile(r"到20\d\d年|\d+(?:\.\d+)?\s*[%％]|[万亿]元|左右|以上")
_ASKER = re.compile(r"记者|主持人|^问$")
_DANGLING = re.compile(r"^(?:但|但是|所以|因此|因而|同时|此外|而且|另外|这些|这|那|他们|他|她|它|其中|对此|为此|当然|其实|总之)")
_GOAL_SENTENCE = re.compile(r"(?:主要|预期|发展|总体|工作)目标|到20\d\d年")
_BOILERPLATE = re.compile(
    r"现(?:将|就).{0,20}(?:通知|意见|如下)|请.{0,12}(?:认真)?(?:贯彻|执行|遵照)|特此(?:通知|公告)|如下[:：]?$|"
    r"女士们|先生们|大家好|谢谢|感谢.{0,8}(?:提问|关心|关注)|欢迎(?:各位|出席|大家)|请.{0,10}(?:回答|介绍|提问)|"
    r"下面.{0,10}(?:请|回答)|"
    r"主持人|记者[:：]|各省、自治区|抄送|印发|联系人|^附件|^[（(]?此件|请予审议|提出意见|我代表|责任编辑|关键词$"
)


def structure_prior(unit: SentenceUnit) -> float:
    """Bonus (or malus) from where a sentence sits and what it looks like; 0 for plain prose."""
    bonus = 0.0
    if unit.run_in:
        bonus += 0.3  # "（一）加快推动重大项目建设。": the measure in one line
    elif unit.opens_section:
        bonus += 0.1  # first sentence under a heading
    elif unit.topic:
        bonus += 0.1
    if any(_GOAL_SECTION.search(h) for h in unit.headings):
        bonus += 0.1
    targets = len(_TARGET.findall(unit.text))
    if _GOAL_SENTENCE.search(unit.text) and targets:
        bonus += 0.3  # "今年发展主要预期目标是：国内生产总值增长5%左右；……": what an analyst looks for first
    bonus += min(0.05 * targets, 0.15)
    if _BOILERPLATE.search(unit.text):
        bonus -= 0.6
    if unit.text.rstrip("”’」』）)】\"'").endswith(("？", "?")):
        bonus -= 1.0  # an analyst wants the answer, not the question: only when nothing else is left
    if unit.speaker and _ASKER.search(unit.speaker):
        bonus -= 0.4  # the journalist's or host's words in a press conference
    if len(unit.text) < 12 and not (unit.run_in or unit.topic):
        bonus -= 0.2
    if _DANGLING.match(unit.text):
        bonus -= 0.15  # "所以……", "这些……": needs the sentence before it to make sense
    if len(unit.text) > 120:  # a reader skims; a 250-character sentence eats half the budget
        bonus -= min(0.4, 0.1 * (len(unit.text) - 120) / 50 + 0.05)
    return bonus


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
    """Indices of the chosen sentences in document order (MMR + trigram blocking + budget)."""
    n = len(units)
    chosen: list[int] = []
    if n == 0:
        return chosen
    used_chars = 0
    grams = [_trigrams(u.text) for u in units]
    chosen_grams: set[str] = set()
    remaining = set(range(n))
    while remaining:
        if budget.max_sentences is not None and len(chosen) >= budget.max_sentences:
            break
        best, best_value = -1, -np.inf
        for i in remaining:
            if budget.max_chars is not None and chosen and used_chars + len(units[i].text) > budget.max_chars:
                continue
            value = float(scores[i])
            if use_mmr and chosen and embeddings is not None:
                overlap = float(max(embeddings[i] @ embeddings[j] for j in chosen))
                value -= config.redundancy * max(0.0, overlap - config.similarity_floor) / (1 - config.similarity_floor)
            if value > best_value:
                best, best_value = i, value
        if best < 0:
            break
        remaining.discard(best)
        if chosen and len(grams[best] & chosen_grams) / len(grams[best]) >= config.trigram_block:
            continue  # says again what is already said
        if not chosen and budget.max_chars is not None and len(units[best].text) > budget.max_chars:
            fitting = [i for i in remaining if len(units[i].text) <= budget.max_chars]
            if fitting:  # the best sentence is over budget on its own: take the best one that fits
                best = max(fitting, key=lambda i: scores[i])
                remaining.discard(best)
        chosen.append(best)
        chosen_grams |= grams[best]
        used_chars += len(units[best].text)
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
