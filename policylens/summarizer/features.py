"""Features the summariser's scorer sees next to each sentence embedding."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from policylens.summarizer import structure as st
from policylens.summarizer.units import SentenceUnit

GENERAL_FEATURES = (
    "rel_position", "inv_position", "rel_paragraph", "first_in_paragraph", "inv_index_in_paragraph",
    "log_chars", "sim_centroid", "sim_first", "textrank", "log_n_sentences", "digit_share", "sim_max_other",
    "bigram_centrality", "bigram_shared", "bigram_sim_first",
)
# what policy documents carry (policylens/summarizer/structure.py), plus the genre of the document
STRUCTURE_FEATURES = (
    "genre_policy", "year_target", "n_targets", "goal_sentence", "purpose", "in_goal_section", "in_task_section",
    "in_safeguard_section", "run_in", "numbered", "opens_section", "topic", "boilerplate", "question_or_asker",
    "dangling", "section_rank", "rel_position_in_section", "first_in_section", "structure_prior",
)
FEATURE_NAMES = GENERAL_FEATURES + STRUCTURE_FEATURES


def textrank_scores(embeddings: np.ndarray, damping: float = 0.85, iterations: int = 60,
                    position_bias: float = 0.0) -> np.ndarray:
    """PageRank over the cosine-similarity graph (edges below the mean similarity dropped).

    e5 similarities all sit around 0.75-0.9, so raw weights give a near-uniform
    graph; centring on the mean keeps only the edges that say something.
    position_bias > 0 teleports to early sentences with weight 1/(1+i)^bias
    (PositionRank-style): news and policy sections both put the point first."""
    n = len(embeddings)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    if n == 1:
        return np.ones(1, dtype=np.float32)
    sim = embeddings @ embeddings.T
    np.fill_diagonal(sim, 0.0)
    baseline = sim.sum() / (n * (n - 1))
    weights = np.clip(sim - baseline, 0.0, None)
    np.fill_diagonal(weights, 0.0)
    totals = weights.sum(1, keepdims=True)
    transition = np.where(totals > 0, weights / np.where(totals > 0, totals, 1.0), 1.0 / n)
    teleport = 1.0 / (1.0 + np.arange(n)) ** position_bias
    teleport /= teleport.sum()
    rank = np.full(n, 1.0 / n)
    step = transition.T
    for _ in range(iterations):
        new = (1 - damping) * teleport + damping * step @ rank
        converged = float(np.abs(new - rank).max()) < 1e-9
        rank = new
        if converged:
            break
    return (rank / rank.sum()).astype(np.float32)


def lexical_features(units: Sequence[SentenceUnit]) -> np.ndarray:
    """[n, 3] character-bigram centrality: headlines reuse the terms a story keeps repeating,
    which mean-pooled embeddings blur. (mean share of other sentences sharing each bigram,
    share of bigrams seen elsewhere, bigram Jaccard with the first sentence)."""
    grams = [{t[i : i + 2] for i in range(len(t) - 1)} for t in (re.sub(r"\W", "", u.text) for u in units)]
    df = Counter(g for sentence in grams for g in sentence)
    n = len(units)
    out = np.zeros((n, 3), dtype=np.float32)
    for i, sentence in enumerate(grams):
        if not sentence:
            continue
        others = [df[g] - 1 for g in sentence]
        out[i, 0] = float(np.mean(others)) / max(n - 1, 1)
        out[i, 1] = float(np.mean([o > 0 for o in others]))
        out[i, 2] = len(sentence & grams[0]) / max(len(sentence | grams[0]), 1)
    return out


def structure_features(units: Sequence[SentenceUnit], genre: float = 0.0) -> np.ndarray:
    """[n, len(STRUCTURE_FEATURES)]: each sentence's role in a policy text (target, task section,
    numbered measure, safeguards, purpose statement, boilerplate), and where its section sits."""
    n = len(units)
    out = np.zeros((n, len(STRUCTURE_FEATURES)), dtype=np.float32)
    sections: list[str] = []
    for unit in units:
        if not sections or sections[-1] != unit.section:
            sections.append(unit.section)
    section_index, position_in_section, section_sizes = [], [], []
    k, i = -1, 0
    for j, unit in enumerate(units):
        if j == 0 or units[j - 1].section != unit.section:
            k, i = k + 1, 0
        section_index.append(k)
        position_in_section.append(i)
        i += 1
    for k_ in range(len(sections)):
        section_sizes.append(section_index.count(k_))
    for j, unit in enumerate(units):
        text = unit.text
        size = section_sizes[section_index[j]]
        out[j] = (
            genre,
            float(bool(st.YEAR_TARGET.search(text))),
            min(len(st.TARGET.findall(text)), 5) / 5.0,
            float(bool(st.GOAL_SENTENCE.search(text))),
            float(bool(st.PURPOSE.search(text))),
            float(st.in_section(unit, st.GOAL_SECTION)),
            float(st.in_section(unit, st.TASK_SECTION)),
            float(st.in_section(unit, st.SAFEGUARD_SECTION)),
            float(unit.run_in),
            float(unit.index_in_paragraph == 0 and bool(st.ORDINAL.match(text))),
            float(unit.opens_section),
            float(unit.topic),
            float(bool(st.BOILERPLATE.search(text))),
            float(st.is_question(unit) or bool(unit.speaker and st.ASKER.search(unit.speaker))),
            float(bool(st.DANGLING.match(text))),
            section_index[j] / max(len(sections) - 1, 1),
            position_in_section[j] / max(size - 1, 1),
            float(position_in_section[j] == 0),
            st.structure_prior(unit),
        )
    return out


def hand_features(units: Sequence[SentenceUnit], embeddings: np.ndarray, genre: float = 0.0) -> np.ndarray:
    """[n, len(FEATURE_NAMES)] position, length, centrality, lexical and structure features, all O(1)
    in scale. genre: 1.0 policy text, 0.0 news (structure.genre_of)."""
    n = len(units)
    feats = np.zeros((n, len(FEATURE_NAMES)), dtype=np.float32)
    if n == 0:
        return feats
    centroid = embeddings.mean(0)
    centroid /= max(float(np.linalg.norm(centroid)), 1e-6)
    sim = embeddings @ embeddings.T
    np.fill_diagonal(sim, -1.0)
    n_paragraphs = units[-1].paragraph_index + 1
    rank = textrank_scores(embeddings) * n
    for i, unit in enumerate(units):
        chars = len(unit.text)
        feats[i] = (
            i / max(n - 1, 1),
            1.0 / (1 + i),
            unit.paragraph_index / max(n_paragraphs - 1, 1),
            float(unit.index_in_paragraph == 0),
            1.0 / (1 + unit.index_in_paragraph),
            math.log1p(chars) / 5.0,
            float(embeddings[i] @ centroid),
            float(embeddings[i] @ embeddings[0]),
            float(rank[i]),
            math.log1p(n) / 5.0,
            sum(c.isdigit() for c in unit.text) / max(chars, 1),
            float(sim[i].max()) if n > 1 else 0.0,
            0.0, 0.0, 0.0,
        ) + (0.0,) * len(STRUCTURE_FEATURES)
    g = len(GENERAL_FEATURES)
    feats[:, g - 3 : g] = lexical_features(units)
    feats[:, g:] = structure_features(units, genre)
    return feats
