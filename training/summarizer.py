"""Extractive summariser: sentence units, oracle labels, cached embeddings, a small scorer.

Why this shape: on two shared CPU cores fine-tuning the encoder is too slow, so
every sentence is embedded once with the frozen e5 encoder (mean pooled,
cached under models/cache/) and only a small BertSum-style inter-sentence
transformer is trained on top, with BCE against greedy-oracle labels computed
from character ROUGE against the news headline.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from policylens.chinese import normalize
from policylens.document import Document
from policylens.io import InputError, read_jsonl, write_json
from policylens.paths import HEADLINES_PATH, MODELS_DIR
from policylens.segment import HEADING_LEVELS, segment, split_sentences

DEFAULT_MODEL_DIR = MODELS_DIR / "summarizer"
CACHE_DIR = MODELS_DIR / "cache" / "summarizer"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "summarizer.json"
PASSAGE_PREFIX = "passage: "  # e5 was trained with this prefix on passages
QUERY_PREFIX = "query: "

# ----------------------------------------------------------------------------
# sentence units: what the summariser picks, with pointers back to the source
# ----------------------------------------------------------------------------

MIN_SENTENCE_CHARS = 4  # fewer content characters: a fragment ("附件：", "1."), never a summary sentence
_DASH_TITLE = re.compile(r"^(——|－－|--)")
_CONTENT = re.compile(r"[\w]")
_ENDS_SENTENCE = re.compile(r"[。！？；!?;…][”’」』）)】\"']*$")
_DOC_TITLE = re.compile(r"(通知|意见|办法|方案|规划|决定|公告|细则|规定|报告|计划|纲要|指南)$")


def _is_label_line(paragraph_text: str) -> bool:
    """A whole paragraph without sentence-final punctuation that is short ("国务院总理") or names a
    document ("……关于……的通知"), or a short line ending in a colon: a signature, caption,
    title or addressee line the segmenter kept as body. Context, never a summary sentence."""
    text = paragraph_text.strip()
    if text.endswith((":", "：")) and len(text) <= 80:
        return True  # "各省、自治区、直辖市……:" addressees, "以下是回复全文:"
    return not _ENDS_SENTENCE.search(text) and (len(text) <= 30 or bool(_DOC_TITLE.search(text)))


@dataclass(frozen=True)
class SentenceUnit:
    """One candidate sentence: normalised text plus where it sits in Document.text."""

    text: str  # normalised (Simplified) text
    paragraph_id: str
    start: int  # document.text[start:end] is the sentence as written
    end: int
    paragraph_index: int  # rank of its paragraph among the body paragraphs
    index_in_paragraph: int
    section: str = ""  # outermost enclosing heading ("" before the first heading)
    headings: tuple[str, ...] = ()
    opens_section: bool = False  # first sentence of the first body paragraph under a heading
    run_in: bool = False  # a numbered run-in title such as "（一）加快推动重大项目建设。"
    topic: bool = False  # a short comma-free headline-like sentence ("促进消费稳定增长。") inside a long paragraph
    speaker: str | None = None  # who says it (press conferences, interviews)


def _is_run_in(sentence: str, paragraph_text: str, index_in_paragraph: int) -> bool:
    if index_in_paragraph != 0 or len(sentence) > 40 or len(sentence) >= len(paragraph_text):
        return False
    return bool(_DASH_TITLE.match(sentence) or any(p.match(sentence) for _, p in HEADING_LEVELS))


def _is_topic(sentence: str, paragraph_text: str) -> bool:
    """Government reports introduce each topic with a short headline-like sentence
    ("促进消费稳定增长。") and then elaborate; that sentence is the gist."""
    return 6 <= len(sentence) <= 24 and not re.search(r"[，,：:；、]", sentence) and len(paragraph_text) >= 100


MAX_MERGED_CHARS = 200


def _merge_semicolons(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Rejoin clauses cut at "；" into their sentence while it stays readable (<= 200 chars):
    "目标是：增长5%左右；就业1200万人以上；……。" is one statement, not five."""
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and text[merged[-1][0] : merged[-1][1]].rstrip().endswith(("；", ";")) \
                and b - merged[-1][0] <= MAX_MERGED_CHARS:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return merged


def sentence_units(document: Document) -> list[SentenceUnit]:
    """Sentences of the body paragraphs in reading order (segments the document if needed).

    Titles, headings and speaker lines are context, not candidates: a summary made
    of headings reads like a table of contents."""
    paragraphs = document.paragraphs or segment(document)
    units: list[SentenceUnit] = []
    body_rank = 0
    previous_kind = "title"
    for paragraph in paragraphs:
        if paragraph.kind != "body":
            previous_kind = paragraph.kind
            continue
        after_heading = previous_kind == "heading"
        previous_kind = "body"
        if _is_label_line(paragraph.text):
            continue
        index = 0
        for a, b in _merge_semicolons(paragraph.original, split_sentences(paragraph.original)):
            piece = paragraph.original[a:b]
            lead, trail = len(piece) - len(piece.lstrip()), len(piece) - len(piece.rstrip())
            start, end = paragraph.start + a + lead, paragraph.start + b - trail
            text = normalize(document.text[start:end])
            if len(_CONTENT.findall(text)) < MIN_SENTENCE_CHARS:
                continue
            units.append(
                SentenceUnit(
                    text=text, paragraph_id=paragraph.id, start=start, end=end, paragraph_index=body_rank,
                    index_in_paragraph=index, section=paragraph.headings[0] if paragraph.headings else "",
                    headings=paragraph.headings, opens_section=after_heading and index == 0,
                    run_in=_is_run_in(text, paragraph.text, index),
                    topic=_is_topic(text, paragraph.text), speaker=paragraph.speaker,
                )
            )
            index += 1
        body_rank += 1
    return units


# ----------------------------------------------------------------------------
# the frozen encoder, with an in-memory memo and an on-disk cache
# ----------------------------------------------------------------------------


class SentenceEncoder:
    """Mean-pooled, L2-normalised e5 sentence embeddings ("passage: " prefix)."""

    def __init__(self, backbone: str | os.PathLike | None = None, *, max_length: int = 128,
                 batch_size: int = 32, num_threads: int | None = None, memo_size: int = 50_000) -> None:
        import torch

        from training.backbone import load_backbone, resolve_backbone

        if num_threads:
            torch.set_num_threads(num_threads)
        self.name = resolve_backbone(backbone)
        self.tokenizer, self.model = load_backbone(self.name)
        self.model.eval()
        self.max_length = max_length
        self.batch_size = batch_size
        self.dim = int(self.model.config.hidden_size)
        self.memo_size = memo_size
        self._memo: dict[str, np.ndarray] = {}

    @property
    def fingerprint(self) -> str:
        """Changes when the weights or the truncation change (not when the dir moves): keys the disk cache."""
        directory = Path(self.name)
        provenance = directory / "provenance.json"
        if provenance.exists():
            source = json.loads(provenance.read_text(encoding="utf-8")).get("source", {})
            stamp = f"{source.get('sha256')}:{(directory / 'model.safetensors').stat().st_size}"
        elif (directory / "model.safetensors").exists():
            weights = directory / "model.safetensors"
            stamp = f"{directory.resolve()}:{weights.stat().st_size}:{int(weights.stat().st_mtime)}"
        else:
            stamp = self.name
        return f"{stamp}|{self.max_length}|{PASSAGE_PREFIX}"

    def prime(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Remember precomputed vectors (e.g. from the disk cache) so encode() skips them."""
        for text, vector in zip(texts, vectors):
            if len(self._memo) >= self.memo_size:
                break
            self._memo[text] = np.asarray(vector, dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        """e5 embeds search queries with "query: " (a domain description looking for passages)."""
        import torch

        from training.backbone import mean_pool

        enc = self.tokenizer([QUERY_PREFIX + text], truncation=True, max_length=self.max_length, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        return mean_pool(hidden, enc["attention_mask"]).float().numpy()[0]

    def encode(self, texts: Sequence[str], progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        import torch

        from training.backbone import mean_pool

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        todo = [i for i, t in enumerate(texts) if t not in self._memo]
        for i, text in enumerate(texts):
            if text in self._memo:
                out[i] = self._memo[text]
        order = sorted(todo, key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for n, k in enumerate(range(0, len(order), self.batch_size)):
                batch = order[k : k + self.batch_size]
                enc = self.tokenizer([PASSAGE_PREFIX + texts[i] for i in batch], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
                hidden = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
                out[batch] = mean_pool(hidden, enc["attention_mask"]).float().numpy()
                if progress and n % 20 == 0:
                    progress(k + len(batch), len(order))
        if len(self._memo) < self.memo_size:
            self.prime([texts[i] for i in todo], out[todo])
        return out


class EmbeddingStore:
    """Content-addressed on-disk cache of sentence embeddings for one encoder fingerprint.

    Rows are appended in float16 chunks with an index of text digests, so any
    subset of sentences (another train size, the dev split) reuses earlier work
    and an interrupted encoding run resumes where it stopped."""

    def __init__(self, cache_dir: Path, fingerprint: str) -> None:
        self.dir = Path(cache_dir) / hashlib.sha1(fingerprint.encode()).hexdigest()[:12]
        self.rows: dict[str, int] = {}
        self._chunks: list[np.ndarray] = []
        self._table: np.ndarray | None = None
        index = self.dir / "index.json"
        if index.exists():
            meta = json.loads(index.read_text(encoding="utf-8"))
            for name in meta["chunks"]:
                self._chunks.append(np.load(self.dir / name))
            self.rows = {digest: i for i, digest in enumerate(meta["digests"])}

    @staticmethod
    def digest(text: str) -> str:
        return hashlib.sha1(text.encode()).hexdigest()

    def get(self, texts: Sequence[str]) -> np.ndarray:
        if self._table is None or len(self._table) != len(self.rows):
            self._table = np.concatenate(self._chunks).astype(np.float32)
        return self._table[[self.rows[self.digest(t)] for t in texts]]

    def add(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"vectors-{len(self._chunks):05d}.npy"
        np.save(self.dir / name, vectors.astype(np.float16))
        self._chunks.append(vectors.astype(np.float16))
        for text in texts:
            self.rows[self.digest(text)] = len(self.rows)
        digests = sorted(self.rows, key=self.rows.__getitem__)
        write_json(self.dir / "index.json", {"chunks": [f"vectors-{i:05d}.npy" for i in range(len(self._chunks))],
                                             "digests": digests})


def encode_cached(encoder: SentenceEncoder, texts: Sequence[str], cache_dir: Path = CACHE_DIR,
                  chunk: int = 1024, log: Callable[[str], None] = print) -> np.ndarray:
    """Embeddings of `texts` through the on-disk store (only unseen sentences are encoded)."""
    store = EmbeddingStore(cache_dir, encoder.fingerprint)
    missing = list(dict.fromkeys(t for t in texts if store.digest(t) not in store.rows))
    started = time.perf_counter()
    if missing:
        log(f"  encoding {len(missing)} new sentences ({len(set(texts)) - len(missing)} cached)")
    for k in range(0, len(missing), chunk):
        batch = missing[k : k + chunk]
        store.add(batch, encoder.encode(batch))
        done = k + len(batch)
        log(f"  encoded {done}/{len(missing)} ({done / max(time.perf_counter() - started, 1e-6):.1f}/s)")
    if not texts:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    return store.get(texts)


# ----------------------------------------------------------------------------
# features the scorer sees next to the embedding
# ----------------------------------------------------------------------------

FEATURE_NAMES = (
    "rel_position", "inv_position", "rel_paragraph", "first_in_paragraph", "inv_index_in_paragraph",
    "log_chars", "sim_centroid", "sim_first", "textrank", "log_n_sentences", "digit_share", "sim_max_other",
    "bigram_centrality", "bigram_shared", "bigram_sim_first",
)


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
    for _ in range(iterations):
        rank = (1 - damping) * teleport + damping * transition.T @ rank
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


def hand_features(units: Sequence[SentenceUnit], embeddings: np.ndarray) -> np.ndarray:
    """[n, len(FEATURE_NAMES)] position, length, centrality and lexical features, all O(1) in scale."""
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
        )
    feats[:, -3:] = lexical_features(units)
    return feats


# ----------------------------------------------------------------------------
# oracle labels from character ROUGE
# ----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _char_tokenizer():
    from training.metrics.char_rouge.char_rouge import CharTokenizer  # the evaluation's own tokenizer

    return CharTokenizer(remove_punctuation=True)


def rouge_tokens(text: str) -> list[str]:
    """The characters char_rouge scores (its own tokenizer), so the oracle optimises the reported metric."""
    return _char_tokenizer().tokenize(text)


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _f1(candidate: Counter, reference: Counter) -> float:
    overlap = sum((candidate & reference).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / sum(candidate.values()), overlap / sum(reference.values())
    return 2 * precision * recall / (precision + recall)


def sentence_rouge(sentences: Sequence[str], reference: str) -> np.ndarray:
    """Each sentence's own (ROUGE-1 F + ROUGE-2 F) / 2 against the reference, scaled so the
    best is 1: a graded target next to the 0/1 oracle, so near-misses still rank high."""
    ref_tokens = rouge_tokens(reference)
    ref1, ref2 = _ngrams(ref_tokens, 1), _ngrams(ref_tokens, 2)
    scores = []
    for sentence in sentences:
        tokens = rouge_tokens(sentence)
        scores.append((_f1(_ngrams(tokens, 1), ref1) + _f1(_ngrams(tokens, 2), ref2)) / 2)
    out = np.asarray(scores, dtype=np.float32)
    return out / out.max() if len(out) and out.max() > 0 else out


def oracle_labels(sentences: Sequence[str], reference: str, max_selected: int = 3) -> list[int]:
    """Greedy oracle (BertSum): add the sentence that most raises ROUGE-1 F + ROUGE-2 F
    against the reference, stop when nothing raises it. Character-level, like char_rouge."""
    ref_tokens = rouge_tokens(reference)
    refs = (_ngrams(ref_tokens, 1), _ngrams(ref_tokens, 2))
    tokens = [rouge_tokens(s) for s in sentences]
    labels = [0] * len(sentences)
    chosen: list[int] = []
    best = 0.0
    for _ in range(min(max_selected, len(sentences))):
        best_i, best_gain = -1, best
        for i in range(len(sentences)):
            if labels[i]:
                continue
            joined = [t for j in sorted(chosen + [i]) for t in tokens[j]]
            score = _f1(_ngrams(joined, 1), refs[0]) + _f1(_ngrams(joined, 2), refs[1])
            if score > best_gain + 1e-9:
                best_i, best_gain = i, score
        if best_i < 0:
            break
        labels[best_i] = 1
        chosen.append(best_i)
        best = best_gain
    return labels


# ----------------------------------------------------------------------------
# the scorer
# ----------------------------------------------------------------------------


@dataclass
class ScorerConfig:
    """Shape of the inter-sentence transformer; stored with the weights."""

    embedding_dim: int = 384
    n_features: int = len(FEATURE_NAMES)
    d_model: int = 128
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    max_sentences: int = 64  # context window; longer inputs are scored in windows

    def __post_init__(self) -> None:
        if self.embedding_dim < 1 or self.n_features < 0:
            raise ValueError("embedding_dim must be >= 1 and n_features >= 0")
        if self.d_model < 8 or self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be >= 8 and divisible by heads ({self.heads})")
        if not 0 <= self.layers <= 6 or not 0 <= self.dropout < 1 or self.max_sentences < 2:
            raise ValueError("layers in 0..6, dropout in [0,1), max_sentences >= 2")


def build_scorer(config: ScorerConfig):
    """BertSum-style: project [embedding, features], a few transformer layers across sentences, a logit each."""
    import torch
    from torch import nn

    class SentenceScorer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Sequential(
                nn.Linear(config.embedding_dim + config.n_features, config.d_model), nn.GELU(),
                nn.Dropout(config.dropout), nn.LayerNorm(config.d_model),
            )
            self.encoder = None
            if config.layers:
                layer = nn.TransformerEncoderLayer(config.d_model, config.heads, 2 * config.d_model,
                                                   config.dropout, batch_first=True, norm_first=True)
                self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
            self.head = nn.Linear(config.d_model, 1)

        def forward(self, embeddings: torch.Tensor, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            """embeddings [B,S,E], features [B,S,F], mask [B,S] (True = real sentence) -> logits [B,S]."""
            x = self.proj(torch.cat([embeddings, features], dim=-1))
            if self.encoder is not None:
                x = self.encoder(x, src_key_padding_mask=~mask)
            return self.head(x).squeeze(-1)

    return SentenceScorer()


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


class SummarizerModel:
    """A trained scorer plus its config; scores the sentences of one document."""

    def __init__(self, config: ScorerConfig, module: Any = None, meta: dict[str, Any] | None = None) -> None:
        self.config = config
        self.module = module if module is not None else build_scorer(config)
        self.module.eval()
        self.meta = meta or {}

    def scores(self, embeddings: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Sigmoid relevance per sentence; inputs beyond the context window are scored in windows."""
        import torch

        n, window = len(embeddings), self.config.max_sentences
        out = np.zeros(n, dtype=np.float32)
        if n == 0:
            return out
        self.module.eval()
        with torch.inference_mode():
            for k in range(0, n, window):
                emb = torch.from_numpy(np.ascontiguousarray(embeddings[k : k + window], dtype=np.float32))[None]
                feat = torch.from_numpy(np.ascontiguousarray(features[k : k + window], dtype=np.float32))[None]
                mask = torch.ones(emb.shape[:2], dtype=torch.bool)
                out[k : k + window] = torch.sigmoid(self.module(emb, feat, mask))[0].numpy()
        return out

    def save(self, model_dir: str | Path) -> Path:
        from safetensors.torch import save_file

        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        save_file(state, str(model_dir / WEIGHTS_FILE))
        write_json(model_dir / CONFIG_FILE, {"scorer": asdict(self.config), "features": list(FEATURE_NAMES), **self.meta})
        return model_dir

    @classmethod
    def load(cls, model_dir: str | Path) -> "SummarizerModel":
        from safetensors.torch import load_file

        model_dir = Path(model_dir)
        if not (model_dir / WEIGHTS_FILE).exists() or not (model_dir / CONFIG_FILE).exists():
            raise InputError(f"{model_dir}: not a summarizer model dir (needs {WEIGHTS_FILE} and {CONFIG_FILE})")
        meta = json.loads((model_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        if list(meta.get("features", [])) != list(FEATURE_NAMES):
            raise InputError(f"{model_dir}: trained with other features ({meta.get('features')}); retrain it")
        config = ScorerConfig(**meta.pop("scorer"))
        model = cls(config, meta=meta)
        model.module.load_state_dict(load_file(str(model_dir / WEIGHTS_FILE)))
        model.module.eval()
        return model


def exists(model_dir: str | Path | None = None) -> bool:
    model_dir = Path(model_dir or DEFAULT_MODEL_DIR)
    return (model_dir / WEIGHTS_FILE).exists() and (model_dir / CONFIG_FILE).exists()


# ----------------------------------------------------------------------------
# news pairs -> training examples
# ----------------------------------------------------------------------------


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
                   cache_dir: Path | None = CACHE_DIR, log: Callable[[str], None] = print) -> list[Example]:
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
    from training.metrics.char_rouge.char_rouge import char_rouge_scores

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


def train_summarizer(out_dir: str | Path = DEFAULT_MODEL_DIR, *, backbone: str | None = None,
                     train_size: int = 1600, dev_size: int = 1000, valid_fraction: float = 0.1,
                     scorer_config: ScorerConfig | None = None, config: TrainConfig | None = None,
                     pairs: Sequence[NewsPair] | None = None, encoder: SentenceEncoder | None = None,
                     cache_dir: Path | None = CACHE_DIR, log: Callable[[str], None] = print) -> TrainResult:
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
