"""Train the per-domain heads (policylens/summarizer/domains.py) on the per-domain reference sentences.

Sentence head: every sentence of every training document, for every domain the
document's references address, labelled by the greedy oracle against that domain's
reference sentence under its 120-character budget. Document head: every
(document, domain) pair, labelled by whether the references address the domain.
Both are L2-regularised logistic regressions on standardised features: a few
hundred positives do not support more. How many sentences a domain summary takes
(min_relative) is chosen by an inner cross-validation over the training documents,
and the "addressed" cut by F2 on them (recall counts twice: see _best_threshold);
the held-out fold is never looked at.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from policylens.summarizer.domains import (
    DOCUMENT_FEATURES,
    SENTENCE_FEATURES,
    DomainHeads,
    LogisticHead,
    document_features,
    domain_query,
    pick_domain_sentences,
    sentence_features,
)
from policylens.summarizer.model_dir import SummarizerModel
from policylens.summarizer.oracle import oracle_labels
from policylens.summarizer.policy import DOMAIN_CHARS, PolicyItem


def _fit_logistic(x: np.ndarray, y: np.ndarray, names: Sequence[str], c: float = 1.0,
                  balanced: bool = False) -> LogisticHead:
    from sklearn.linear_model import LogisticRegression

    mean = x.mean(0)
    scale = x.std(0)
    scale = np.where(scale > 1e-6, scale, 1.0)
    model = LogisticRegression(C=c, max_iter=2000, class_weight="balanced" if balanced else None)
    model.fit((x - mean) / scale, y)
    return LogisticHead(tuple(names), model.coef_[0], float(model.intercept_[0]), mean, scale)


MIN_RELATIVE_GRID = (0.3, 0.5, 0.7)


def _choose_min_relative(pairs: Sequence[tuple[str, np.ndarray, np.ndarray, list, str]], c: float, budget: int,
                         folds: int = 3) -> tuple[float, dict[str, float]]:
    """min_relative by an inner cross-validation over the training documents only: fit the sentence
    head on the other inner folds, pick each held-out pair's sentences, keep the best grid value."""
    from policylens.hashing import seeded_int
    from policylens.metrics.rouge import char_rouge_scores

    doc_ids = sorted({p[0] for p in pairs}, key=lambda d: (seeded_int(7, d), d))
    inner = {d: i % folds for i, d in enumerate(doc_ids)}
    predictions: dict[float, list[str]] = {g: [] for g in MIN_RELATIVE_GRID}
    references: list[str] = []
    for fold in range(folds):
        train = [p for p in pairs if inner[p[0]] != fold]
        test = [p for p in pairs if inner[p[0]] == fold]
        if not train or not test:
            continue
        y = np.concatenate([p[2] for p in train])
        if y.min() == y.max():
            continue
        head = _fit_logistic(np.concatenate([p[1] for p in train]), y, SENTENCE_FEATURES, c)
        for _, feats, _, units, reference in test:
            probs = head(feats)
            references.append(reference)
            for g in MIN_RELATIVE_GRID:
                picked = pick_domain_sentences(units, probs, budget, g)
                predictions[g].append("".join(units[i].text for i in picked))
    if not references:
        return 0.5, {}
    scores = {g: char_rouge_scores(predictions[g], references)["rougeL"] for g in MIN_RELATIVE_GRID}
    best = max(scores, key=lambda g: (scores[g], -abs(g - 0.5)))
    return best, {str(g): round(100 * v, 2) for g, v in scores.items()}


def _best_threshold(probs: np.ndarray, truth: np.ndarray, beta: float = 2.0) -> float:
    """The probability cut that maximises F-beta of "addressed" on the training pairs. beta = 2 weighs
    recall twice: a domain the document addresses but the summariser calls "not addressed" loses
    its whole summary, while a false "addressed" still shows sentences that name the domain."""
    best, best_f = 0.5, -1.0
    for t in np.arange(0.05, 0.91, 0.05):
        said = probs >= t
        tp = float(np.sum(said & truth))
        precision, recall = tp / max(float(said.sum()), 1.0), tp / max(float(truth.sum()), 1.0)
        f = (1 + beta**2) * precision * recall / max(beta**2 * precision + recall, 1e-12)
        if f > best_f + 1e-12:
            best, best_f = float(t), f
    return round(best, 2)


def train_domain_heads(model: SummarizerModel | None, examples: Sequence[Any], items: Sequence[PolicyItem],
                       encoder: Any, taxonomy: Any, *, budget: int = DOMAIN_CHARS, c: float = 1.0) -> DomainHeads:
    """Fit both heads on `examples` (training/summarizer/train.py Examples of `items`, matched by
    doc_id): the sentence head first, min_relative by inner CV, then the document head on the
    sentence head's outputs, with the cut that maximises F2 on these documents."""
    by_id = {item.doc_id: item for item in items}
    queries = {label.id: encoder.encode_query(domain_query(label.name_zh, label.keywords)) for label in taxonomy.labels}
    pairs, per_doc = [], []
    for example in examples:
        item = by_id[example.doc_id]
        scores = model.scores(example.embeddings, example.features) if model is not None else None
        texts = [u.text for u in example.units]
        for label in taxonomy.labels:
            sims = (example.embeddings @ queries[label.id]).astype(np.float32)
            feats = sentence_features(example.units, label.keywords, sims, scores)
            per_doc.append((feats, label.id in item.domains))
            if label.id in item.domains:
                reference = item.domains[label.id]
                labels = np.asarray(oracle_labels(texts, reference, max_selected=3, max_chars=budget))
                pairs.append((example.doc_id, feats, labels, example.units, reference))
    if not pairs:
        raise ValueError("no per-domain reference sentences in the training documents")
    x, y = np.concatenate([p[1] for p in pairs]), np.concatenate([p[2] for p in pairs])
    if y.min() == y.max():
        raise ValueError("the per-domain oracle labels are all one class; too few documents to train on")
    sentence = _fit_logistic(x, y, SENTENCE_FEATURES, c)
    min_relative, _ = _choose_min_relative(pairs, c, budget)
    dx = np.stack([document_features(feats, sentence(feats)) for feats, _ in per_doc])
    dy = np.asarray([addressed for _, addressed in per_doc], dtype=int)
    if dy.min() == dy.max():
        raise ValueError("every (document, domain) pair is addressed (or none is); cannot learn 'not addressed'")
    document = _fit_logistic(dx, dy, DOCUMENT_FEATURES, c)
    threshold = _best_threshold(document(dx), dy.astype(bool))
    return DomainHeads(sentence, document, threshold, min_relative)
