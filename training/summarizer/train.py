"""Train the summariser's sentence scorer on oracle labels.

Why this shape: on two shared CPU cores fine-tuning the encoder is too slow, so
every sentence is embedded once with the frozen e5 encoder (mean pooled,
cached under models/cache/) and only a small BertSum-style inter-sentence
transformer is trained on top, with BCE against greedy-oracle labels computed
from character ROUGE against the news headline.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policylens.encoders.e5 import SentenceEncoder, encode_cached
from policylens.metrics.rouge import char_rouge_scores
from policylens.paths import HEADLINES_PATH, SUMMARIZER_CACHE_DIR, SUMMARIZER_DIR
from policylens.summarizer.features import hand_features
from policylens.summarizer.model_dir import ScorerConfig, SummarizerModel, build_scorer
from policylens.summarizer.news import NewsPair, load_news_pairs, split_by_date, spread
from policylens.summarizer.oracle import oracle_labels, sentence_rouge
from policylens.summarizer.units import SentenceUnit, sentence_units


@dataclass
class TrainConfig:
    """One training run of the scorer."""

    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    patience: int = 3  # epochs without validation improvement
    max_train_sentences: int = 16  # per document: covers ~93% of oracle picks, halves encoding time
    soft_weight: float = 1.0  # weight of the graded sentence-ROUGE target next to the oracle BCE
    num_threads: int = 1  # the scorer is tiny: more threads only fight over a shared CPU (40x slower seen)
    seed: int = 13

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 0 or self.max_train_sentences < 1 \
                or self.soft_weight < 0 or self.num_threads < 1:
            raise ValueError("epochs, batch_size >= 1 and patience >= 0")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")



@dataclass
class Example:
    """One document ready for the scorer."""

    doc_id: str
    units: list[SentenceUnit]
    embeddings: np.ndarray
    features: np.ndarray
    labels: np.ndarray  # greedy oracle, 0/1
    reference: str
    soft: np.ndarray | None = None  # sentence_rouge targets (None: use labels)


def build_examples(pairs: Sequence[NewsPair], encoder: SentenceEncoder, *, max_sentences: int = 64,
                   cache_dir: Path | None = SUMMARIZER_CACHE_DIR, log: Callable[[str], None] = print) -> list[Example]:
    """Segment, cut to the first `max_sentences` sentences, embed (cached), label by oracle."""
    docs = []
    for pair in pairs:
        units = sentence_units(pair.document())[:max_sentences]
        if units:
            docs.append((pair, units))
    texts = [u.text for _, units in docs for u in units]
    log(f"  {len(docs)} documents, {len(texts)} sentences")
    vectors = encode_cached(encoder, texts, cache_dir, log=log) if cache_dir else encoder.encode(texts)
    examples, k = [], 0
    for pair, units in docs:
        emb = vectors[k : k + len(units)]
        k += len(units)
        texts = [u.text for u in units]
        labels = np.asarray(oracle_labels(texts, pair.headline), dtype=np.float32)
        examples.append(Example(f"news-{pair.index}", units, emb, hand_features(units, emb), labels, pair.headline,
                                sentence_rouge(texts, pair.headline)))
    return examples


def _batch(examples: Sequence[Example]):
    import torch

    size = max(len(e.units) for e in examples)
    dim, n_feat = examples[0].embeddings.shape[1], examples[0].features.shape[1]
    emb = np.zeros((len(examples), size, dim), dtype=np.float32)
    feat = np.zeros((len(examples), size, n_feat), dtype=np.float32)
    labels = np.zeros((len(examples), size), dtype=np.float32)
    soft = np.zeros((len(examples), size), dtype=np.float32)
    mask = np.zeros((len(examples), size), dtype=bool)
    for b, e in enumerate(examples):
        n = len(e.units)
        emb[b, :n], feat[b, :n], labels[b, :n], mask[b, :n] = e.embeddings, e.features, e.labels, True
        soft[b, :n] = e.soft if e.soft is not None else e.labels
    return tuple(torch.from_numpy(a) for a in (emb, feat, labels, soft, mask))


def example_loss(module: Any, examples: Sequence[Example], batch_size: int = 64) -> float:
    """Mean masked BCE over sentences (no gradient)."""
    import torch

    module.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for k in range(0, len(examples), batch_size):
            emb, feat, labels, _, mask = _batch(examples[k : k + batch_size])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(module(emb, feat, mask)[mask], labels[mask],
                                                                        reduction="sum")
            total, count = total + float(loss), count + int(mask.sum())
    return total / max(count, 1)


def top1_rouge(model: SummarizerModel, examples: Sequence[Example]) -> float:
    """Character ROUGE-L F of the top-scored sentence: the selection criterion between epochs."""
    picks = [e.units[int(np.argmax(model.scores(e.embeddings, e.features)))].text for e in examples]
    return float(char_rouge_scores(picks, [e.reference for e in examples])["rougeL"])


@dataclass
class TrainResult:
    model: SummarizerModel
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def train_scorer(train: Sequence[Example], valid: Sequence[Example], scorer_config: ScorerConfig | None = None,
                 config: TrainConfig | None = None, log: Callable[[str], None] = print) -> TrainResult:
    """AdamW + masked BCE on oracle labels (+ graded sentence-ROUGE targets); keeps the epoch
    with the best validation top-1 ROUGE-L."""
    import torch

    config = config or TrainConfig()
    if not train:
        raise ValueError("no training examples")
    scorer_config = scorer_config or ScorerConfig(embedding_dim=train[0].embeddings.shape[1])
    torch.set_num_threads(config.num_threads)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    module = build_scorer(scorer_config)
    model = SummarizerModel(scorer_config, module)
    optimizer = torch.optim.AdamW(module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(len(train) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.learning_rate, total_steps=steps, pct_start=0.1)
    rng = random.Random(config.seed)
    history: list[dict[str, float]] = []
    best_score, best_state, waited = -1.0, None, 0
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        module.train()
        order = list(range(len(train)))
        rng.shuffle(order)
        running, seen = 0.0, 0
        for k in range(0, len(order), config.batch_size):
            emb, feat, labels, soft, mask = _batch([train[i] for i in order[k : k + config.batch_size]])
            logits = module(emb, feat, mask)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[mask], labels[mask])
            if config.soft_weight:
                loss = loss + config.soft_weight * torch.nn.functional.binary_cross_entropy_with_logits(
                    logits[mask], soft[mask])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            running, seen = running + float(loss.detach()) * int(mask.sum()), seen + int(mask.sum())
        row = {"epoch": epoch, "train_loss": running / max(seen, 1)}
        if valid:
            row["valid_loss"] = example_loss(module, valid)
            row["valid_top1_rougeL"] = top1_rouge(model, valid)
        history.append(row)
        log("  " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
        score = row.get("valid_top1_rougeL", -row["train_loss"])
        if score > best_score:
            best_score, waited = score, 0
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            waited += 1
            if waited > config.patience:
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return TrainResult(model, history, time.perf_counter() - started)


def train_summarizer(out_dir: str | Path = SUMMARIZER_DIR, *, backbone: str | None = None,
                     train_size: int = 1600, dev_size: int = 1000, valid_fraction: float = 0.1,
                     scorer_config: ScorerConfig | None = None, config: TrainConfig | None = None,
                     pairs: Sequence[NewsPair] | None = None, encoder: SentenceEncoder | None = None,
                     cache_dir: Path | None = SUMMARIZER_CACHE_DIR, log: Callable[[str], None] = print) -> TrainResult:
    """End to end: news pairs -> date split -> examples -> scorer -> model dir.

    Validation (epoch selection) is the latest slice of the training dates, so
    the dev split used for the reported ROUGE is never looked at."""
    started = time.perf_counter()
    pairs = list(pairs) if pairs is not None else load_news_pairs()
    train_pairs, dev_pairs = split_by_date(pairs, dev_size=dev_size, train_size=None)
    train_pairs, valid_pairs = split_by_date(train_pairs, dev_size=max(1, int(len(train_pairs) * valid_fraction)),
                                             train_size=train_size)
    valid_pairs = spread(valid_pairs, max(300, int(train_size * valid_fraction)))
    encoder = encoder or SentenceEncoder(backbone)
    scorer_config = scorer_config or ScorerConfig(embedding_dim=encoder.dim)
    log(f"train {len(train_pairs)} ({train_pairs[0].date}..{train_pairs[-1].date}), "
        f"valid {len(valid_pairs)}, dev {len(dev_pairs)} (from {dev_pairs[0].date if dev_pairs else '-'})")
    log("train examples:")
    config = config or TrainConfig()
    cap = min(config.max_train_sentences, scorer_config.max_sentences)
    train_examples = build_examples(train_pairs, encoder, max_sentences=cap,
                                    cache_dir=cache_dir, log=log)
    log("valid examples:")
    valid_examples = build_examples(valid_pairs, encoder, max_sentences=cap,
                                    cache_dir=cache_dir, log=log)
    result = train_scorer(train_examples, valid_examples, scorer_config, config, log=log)
    result.model.meta = {
        "backbone": encoder.name,
        "encoder_max_length": encoder.max_length,
        "training": asdict(config),
        "data": {
            "source": str(HEADLINES_PATH.name), "train_docs": len(train_examples), "valid_docs": len(valid_examples),
            "train_dates": [train_pairs[0].date, train_pairs[-1].date],
            "dev_from_date": dev_pairs[0].date if dev_pairs else None,
            "positive_rate": float(np.mean(np.concatenate([e.labels for e in train_examples]))),
        },
        "history": result.history,
        "train_seconds": round(result.seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    result.model.save(out_dir)
    log(f"saved {out_dir} (scorer {result.seconds:.0f} s, total {time.perf_counter() - started:.0f} s)")
    return result
