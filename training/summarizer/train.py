"""Train the summariser's sentence scorer on oracle labels, news and policy documents together.

Why this shape: on two shared CPU cores fine-tuning the encoder is too slow, so
every sentence is embedded once with the frozen sentence encoder (the int8 ONNX
export that serving uses, cached on disk under models/cache/) and only a small
BertSum-style inter-sentence transformer is trained on top, with BCE against
greedy-oracle labels computed from character ROUGE: against the headline for
news, against the written 250-character summary for policy documents. The two
genres train one scorer; a genre feature (policylens/summarizer/structure.py)
tells it which kind of document it is reading, and the structure features
(targets, task sections, numbered measures, safeguards) carry what policy texts
are organised by.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from policylens.encoders.e5 import encode_cached
from policylens.metrics.rouge import char_rouge_scores
from policylens.paths import HEADLINES_PATH, SUMMARIZER_CACHE_DIR, SUMMARIZER_DIR
from policylens.summarizer.features import hand_features
from policylens.summarizer.model_dir import ScorerConfig, SummarizerModel, build_scorer
from policylens.summarizer.news import NewsPair, load_news_pairs, split_by_date, spread
from policylens.summarizer.oracle import oracle_labels, sentence_rouge
from policylens.summarizer.policy import (
    POLICY_SUMMARIES_PATH,
    SUMMARY_CHARS,
    PolicyItem,
    load_policy_items,
)
from policylens.summarizer.structure import genre_of, structure_prior
from policylens.summarizer.units import SentenceUnit, sentence_units


@dataclass
class TrainConfig:
    """One training run of the scorer."""

    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    patience: int = 3  # epochs without validation improvement
    max_train_sentences: int = 16  # per news item: covers ~93% of oracle picks, halves encoding time
    soft_weight: float = 1.0  # weight of the graded sentence-ROUGE target next to the oracle BCE
    policy_repeat: int = 4  # each policy window is seen this many times per epoch (120 documents vs ~1,600 news)
    policy_window: int = 64  # policy documents are cut into windows of this many sentences for training
    num_threads: int = 1  # the scorer is tiny: more threads only fight over a shared CPU (40x slower seen)
    seed: int = 13

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 0 or self.max_train_sentences < 1 \
                or self.soft_weight < 0 or self.num_threads < 1 or self.policy_repeat < 0 or self.policy_window < 2:
            raise ValueError("epochs, batch_size, max_train_sentences, num_threads >= 1, policy_window >= 2; "
                             "patience, soft_weight, policy_repeat >= 0")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")


@dataclass
class Example:
    """One document (or a window of one) ready for the scorer."""

    doc_id: str
    units: list[SentenceUnit]
    embeddings: np.ndarray
    features: np.ndarray
    labels: np.ndarray  # greedy oracle, 0/1
    reference: str
    soft: np.ndarray | None = None  # sentence_rouge targets (None: use labels)
    genre: float = 0.0  # 1.0 policy, 0.0 news


def _encode(texts: list[str], encoder: Any, cache_dir: Path | None, log: Callable[[str], None]) -> np.ndarray:
    return encode_cached(encoder, texts, cache_dir, log=log) if cache_dir else encoder.encode(texts)


def _embed_documents(docs: list[tuple[Any, list]], encoder: Any, cache_dir: Path | None,
                     log: Callable[[str], None]) -> list[np.ndarray]:
    """Every sentence of every (item, units) document embedded in one batch (cached), split back per document."""
    texts = [u.text for _, units in docs for u in units]
    vectors = _encode(texts, encoder, cache_dir, log)
    ends = np.cumsum([len(units) for _, units in docs])
    return np.split(vectors, ends[:-1]) if docs else []


def build_examples(pairs: Sequence[NewsPair], encoder: Any, *, max_sentences: int = 64,
                   cache_dir: Path | None = SUMMARIZER_CACHE_DIR, log: Callable[[str], None] = print) -> list[Example]:
    """News: segment, cut to the first `max_sentences` sentences, embed (cached), label by oracle vs the headline."""
    docs = []
    for pair in pairs:
        units = sentence_units(pair.document())[:max_sentences]
        if units:
            docs.append((pair, units))
    log(f"  {len(docs)} documents, {sum(len(units) for _, units in docs)} sentences")
    examples = []
    for (pair, units), emb in zip(docs, _embed_documents(docs, encoder, cache_dir, log)):
        texts = [u.text for u in units]
        labels = np.asarray(oracle_labels(texts, pair.headline), dtype=np.float32)
        examples.append(Example(f"news-{pair.index}", units, emb, hand_features(units, emb, 0.0), labels,
                                pair.headline, sentence_rouge(texts, pair.headline), 0.0))
    return examples


def build_policy_examples(items: Sequence[PolicyItem], encoder: Any, *, budget: int = SUMMARY_CHARS,
                          max_selected: int = 10, cache_dir: Path | None = SUMMARIZER_CACHE_DIR,
                          log: Callable[[str], None] = print) -> list[Example]:
    """Policy documents, whole: every sentence embedded, labelled by the greedy oracle against the
    written summary under the summary's own budget (`budget` characters)."""
    docs = [(item, sentence_units(item.document())) for item in items]
    docs = [(item, units) for item, units in docs if units]
    log(f"  {len(docs)} policy documents, {sum(len(units) for _, units in docs)} sentences")
    examples = []
    for (item, units), emb in zip(docs, _embed_documents(docs, encoder, cache_dir, log)):
        texts = [u.text for u in units]
        genre = genre_of(units, item.source)
        labels = np.asarray(oracle_labels(texts, item.summary, max_selected=max_selected, max_chars=budget),
                            dtype=np.float32)
        examples.append(Example(item.doc_id, units, emb, hand_features(units, emb, genre), labels, item.summary,
                                sentence_rouge(texts, item.summary), genre))
    return examples


def windows(examples: Sequence[Example], size: int) -> list[Example]:
    """Long documents cut into consecutive windows of `size` sentences (the scorer's context at
    serving time is a window too); features stay those of the whole document."""
    out = []
    for e in examples:
        for k in range(0, len(e.units), size):
            cut = slice(k, k + size)
            out.append(replace(e, units=e.units[cut], embeddings=e.embeddings[cut], features=e.features[cut],
                               labels=e.labels[cut], soft=None if e.soft is None else e.soft[cut]))
    return out


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


def budget_rouge(model: SummarizerModel, examples: Sequence[Example], budget: int = SUMMARY_CHARS) -> float:
    """Character ROUGE-L F of the best-scored sentences that fit `budget` characters (document order):
    a cheap stand-in for the full selection, for choosing between epochs on policy documents."""
    picks = []
    for e in examples:
        scores = model.scores(e.embeddings, e.features)
        chosen, used = [], 0
        for i in np.argsort(-scores):
            if used + len(e.units[i].text) <= budget or not chosen:
                chosen.append(int(i))
                used += len(e.units[i].text)
        picks.append("".join(e.units[i].text for i in sorted(chosen)))
    return float(char_rouge_scores(picks, [e.reference for e in examples])["rougeL"])


@dataclass
class TrainResult:
    model: SummarizerModel
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def train_scorer(train: Sequence[Example], valid: Sequence[Example], scorer_config: ScorerConfig | None = None,
                 config: TrainConfig | None = None, log: Callable[[str], None] = print,
                 policy_valid: Sequence[Example] = ()) -> TrainResult:
    """AdamW + masked BCE on oracle labels (+ graded sentence-ROUGE targets); keeps the epoch with the
    best validation score: top-1 ROUGE-L on news `valid`, plus budgeted ROUGE-L on `policy_valid`."""
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
    if steps >= 20:
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.learning_rate, total_steps=steps, pct_start=0.1)
    else:  # too few steps for a warm-up phase (OneCycleLR divides by its length): a constant rate
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    rng = random.Random(config.seed)
    history: list[dict[str, float]] = []
    best_score, best_state, waited = -math.inf, None, 0
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
        row: dict[str, float] = {"epoch": epoch, "train_loss": running / max(seen, 1)}
        if valid:
            row["valid_loss"] = example_loss(module, valid)
            row["valid_top1_rougeL"] = top1_rouge(model, valid)
        if policy_valid:
            row["policy_valid_rougeL"] = budget_rouge(model, policy_valid)
        history.append(row)
        log("  " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
        if valid or policy_valid:
            score = row.get("valid_top1_rougeL", 0.0) + row.get("policy_valid_rougeL", 0.0)
        else:
            score = -row["train_loss"]
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


def fit(news_train: Sequence[Example], news_valid: Sequence[Example], policy_train: Sequence[Example] = (),
        scorer_config: ScorerConfig | None = None, config: TrainConfig | None = None,
        log: Callable[[str], None] = print, policy_valid: Sequence[Example] = ()) -> TrainResult:
    """One scorer on news and policy examples: policy documents cut into windows and repeated
    `config.policy_repeat` times (120 long documents next to ~1,600 short news items)."""
    config = config or TrainConfig()
    train = list(news_train) + windows(policy_train, config.policy_window) * config.policy_repeat
    return train_scorer(train, news_valid, scorer_config, config, log=log, policy_valid=policy_valid)


def short_text_threshold(model: SummarizerModel, examples: Sequence[Example], bodies: Sequence[int],
                         grid: Sequence[int] = (0, 100, 150, 200, 250, 300, 400, 500, 700, 1000),
                         prior_weight: float = 1.0) -> dict[str, Any]:
    """The body length (characters) below which the lead does at least as well as the scorer, from
    held-out items: for each candidate threshold, short items get their first sentence and the rest
    the scorer's pick (score + structure prior, as serving picks one sentence); the threshold with the
    best mean ROUGE-L wins, the smallest on ties. Returns it with the per-threshold means."""
    refs = [e.reference for e in examples]
    lead, trained = [], []
    for e in examples:
        raw = model.scores(e.embeddings, e.features)
        span = float(raw.max() - raw.min())
        scaled = (raw - raw.min()) / span if span > 1e-9 else np.full_like(raw, 0.5)
        prior = np.asarray([structure_prior(u) for u in e.units], dtype=np.float32)
        trained.append(e.units[int(np.argmax(scaled + prior_weight * prior))].text)
        lead.append(e.units[0].text)
    lead_r = np.asarray([char_rouge_scores([p], [r])["rougeL"] for p, r in zip(lead, refs)])
    trained_r = np.asarray([char_rouge_scores([p], [r])["rougeL"] for p, r in zip(trained, refs)])
    lengths = np.asarray(bodies)
    means = {int(t): float(np.where(lengths < t, lead_r, trained_r).mean()) for t in grid}
    best = max(means.values())
    chosen = min(t for t, m in means.items() if m >= best - 1e-12)
    return {"chars": chosen, "items": len(examples), "rougeL_by_threshold": {str(t): round(100 * m, 2)
                                                                               for t, m in means.items()}}


def _meta(encoder: Any) -> dict[str, Any]:
    info = getattr(getattr(encoder, "inner", encoder), "info", None) or {}
    return {"name": encoder.name, "fingerprint": encoder.fingerprint, "dim": int(encoder.dim),
            "max_length": int(encoder.max_length), "kind": "onnx-int8" if info else "torch",
            **({"export": info.get("config")} if info else {})}


def train_summarizer(out_dir: str | Path = SUMMARIZER_DIR, *, backbone: str | None = None,
                     train_size: int = 1600, dev_size: int = 1000, valid_fraction: float = 0.1,
                     scorer_config: ScorerConfig | None = None, config: TrainConfig | None = None,
                     pairs: Sequence[NewsPair] | None = None, encoder: Any = None,
                     policy_items: Sequence[PolicyItem] | None = None, taxonomy: Any = None,
                     cache_dir: Path | None = SUMMARIZER_CACHE_DIR, log: Callable[[str], None] = print) -> TrainResult:
    """End to end: news pairs (date split) + policy documents -> examples -> scorer, short-text rule,
    domain heads -> model dir.

    News validation (epoch selection and the short-text threshold) is the latest slice of
    the training dates, so the news dev split used for the reported ROUGE is never looked
    at. policy_items: None reads every document of policy_summaries.jsonl when the file is
    there (the production model); [] trains on news alone (no domain heads then).
    encoder: the sentence encoder (the CLI passes the int8 ONNX export); None builds the
    PyTorch e5 encoder from `backbone`."""
    from policylens.encoders.e5 import SentenceEncoder
    from policylens.taxonomy import Taxonomy
    from training.summarizer.domains import train_domain_heads

    started = time.perf_counter()
    pairs = list(pairs) if pairs is not None else load_news_pairs()
    if policy_items is None:
        policy_items = load_policy_items() if POLICY_SUMMARIES_PATH.exists() else []
    encoder = encoder or SentenceEncoder(backbone)
    scorer_config = scorer_config or ScorerConfig(embedding_dim=encoder.dim)
    config = config or TrainConfig()
    _, dev_pairs = split_by_date(pairs, dev_size=dev_size, train_size=None)
    news = build_news_data(encoder, pairs=pairs, train_size=train_size, dev_size=dev_size,
                           valid_fraction=valid_fraction, max_sentences=scorer_config.max_sentences, config=config,
                           cache_dir=cache_dir, log=log)
    log(f"news: train {len(news.train)} ({news.train_dates[0]}..{news.train_dates[1]}), valid {len(news.valid)}, "
        f"dev {len(dev_pairs)} (from {dev_pairs[0].date if dev_pairs else '-'}); policy documents: {len(policy_items)}")
    policy_examples = []
    if policy_items:
        log("policy examples:")
        policy_examples = build_policy_examples(policy_items, encoder, cache_dir=cache_dir, log=log)
    result = fit(news.train, news.valid, policy_examples, scorer_config, config, log=log)
    short = short_text_threshold(result.model, news.rule, news.rule_bodies)
    log(f"short-text rule: lead below {short['chars']} characters (valid ROUGE-L by threshold "
        f"{short['rougeL_by_threshold']})")
    heads = None
    if policy_examples:
        heads = train_domain_heads(result.model, policy_examples, policy_items, encoder, taxonomy or Taxonomy.load())
    info = getattr(getattr(encoder, "inner", encoder), "info", None) or {}
    result.model.meta = {
        "backbone": info.get("backbone") or encoder.name,
        "encoder": _meta(encoder),
        "encoder_max_length": encoder.max_length,
        "training": asdict(config),
        "data": {
            "source": str(HEADLINES_PATH.name), "train_docs": len(news.train), "valid_docs": len(news.valid),
            "train_dates": news.train_dates, "dev_from_date": dev_pairs[0].date if dev_pairs else None,
            "positive_rate": float(np.mean(np.concatenate([e.labels for e in news.train]))),
            "policy_docs": len(policy_examples), "policy_source": POLICY_SUMMARIES_PATH.name,
        },
        "short_text": short,
        **({"domain_heads": heads.to_dict()} if heads is not None else {}),
        "history": result.history,
        "train_seconds": round(result.seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    result.model.save(out_dir)
    log(f"saved {out_dir} (scorer {result.seconds:.0f} s, total {time.perf_counter() - started:.0f} s)")
    return result


@dataclass
class NewsData:
    """The news examples every fold shares (built once: encoding is the slow part)."""

    train: list[Example]
    valid: list[Example]  # epoch selection
    rule: list[Example]  # the short-text rule: more items of the same validation dates (it compares small gaps)
    rule_bodies: list[int]  # body characters of each rule item
    train_dates: list[str]


def build_news_data(encoder: Any, *, pairs: Sequence[NewsPair] | None = None, train_size: int = 1600,
                    dev_size: int = 1000, valid_fraction: float = 0.1, max_sentences: int = 64, rule_size: int = 1000,
                    config: TrainConfig | None = None, cache_dir: Path | None = SUMMARIZER_CACHE_DIR,
                    log: Callable[[str], None] = print) -> NewsData:
    """The news training and validation examples exactly as train_summarizer splits them; the
    short-text rule is learnt on up to `rule_size` items of the validation dates."""
    config = config or TrainConfig()
    pairs = list(pairs) if pairs is not None else load_news_pairs()
    train_pairs, _ = split_by_date(pairs, dev_size=dev_size, train_size=None)
    train_pairs, valid_pairs = split_by_date(train_pairs, dev_size=max(1, int(len(train_pairs) * valid_fraction)),
                                             train_size=train_size)
    rule_pairs = spread(valid_pairs, max(rule_size, 1))
    valid_pairs = spread(valid_pairs, max(300, int(train_size * valid_fraction)))
    log("news train examples:")
    train = build_examples(train_pairs, encoder, max_sentences=min(config.max_train_sentences, max_sentences),
                           cache_dir=cache_dir, log=log)
    log("news valid examples:")
    valid = build_examples(valid_pairs, encoder, max_sentences=max_sentences, cache_dir=cache_dir, log=log)
    log("news examples for the short-text rule:")
    rule = build_examples(rule_pairs, encoder, max_sentences=max_sentences, cache_dir=cache_dir, log=log)
    bodies = {f"news-{p.index}": sum(len(u.text) for u in sentence_units(p.document())) for p in rule_pairs}
    return NewsData(train, valid, rule, [bodies[e.doc_id] for e in rule], [train_pairs[0].date, train_pairs[-1].date])


def make_fold_trainer(news: NewsData, policy_examples: Sequence[Example], encoder: Any, taxonomy: Any, *,
                      scorer_config: ScorerConfig | None = None, config: TrainConfig | None = None,
                      log: Callable[[str], None] = print) -> Callable[[Sequence[PolicyItem]], SummarizerModel]:
    """`train_fold(items) -> SummarizerModel` for cross-validation: trains the scorer on the news
    examples plus the policy examples of `items` only, then the short-text rule (news valid) and
    the domain heads (those same items), exactly as train_summarizer does for the production model."""
    from training.summarizer.domains import train_domain_heads

    by_id = {e.doc_id: e for e in policy_examples}

    def train_fold(items: Sequence[PolicyItem]) -> SummarizerModel:
        examples = [by_id[item.doc_id] for item in items if item.doc_id in by_id]
        result = fit(news.train, news.valid, examples, scorer_config, config, log=lambda m: None)
        model = result.model
        short = short_text_threshold(model, news.rule, news.rule_bodies)
        heads = train_domain_heads(model, examples, items, encoder, taxonomy)
        model.meta = {"encoder": _meta(encoder), "short_text": short, "domain_heads": heads.to_dict(),
                      "data": {"train_dates": news.train_dates, "policy_docs": len(examples)},
                      "history": result.history}
        log(f"  scorer: {len(result.history)} epochs, {result.seconds:.0f} s; short-text rule < {short['chars']} chars")
        return model

    return train_fold
