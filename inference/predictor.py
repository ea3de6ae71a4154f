"""Load a tagger directory once, then score paragraphs and analyse documents fast on CPU.

The hot path: tokenise all windows in one Rust call, run them in length-sorted
batches with dynamic padding (torch under `inference_mode`, or an ONNX Runtime
session), pool the window logits per paragraph, calibrate, threshold. Nothing
is loaded or re-tokenised per call; identical paragraph texts are scored once.

`analyze` adds the document view on top: segment -> tag every paragraph ->
aggregate per document (inference/analysis.py) -> summary when a summariser
is available (its absence or failure is recorded, never fatal).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inference.analysis import AggregateConfig, DocumentAnalysis, SummaryView, TaggedParagraph, build_analysis
from inference.model_dir import META_FILE, TaggerMeta, follow_pointer
from inference.windows import length_sorted_batches, pad_batch, pool_windows, tokenize_windows
from policylens.chinese import normalize
from policylens.document import Document
from policylens.io import InputError
from policylens.segment import SegmentConfig, segment

BACKENDS = ("torch", "onnx")
# A scorer maps one padded batch (input_ids, attention_mask) to raw logits [batch, n_labels].
Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ParagraphTags:
    text: str
    scores: dict[str, float]  # calibrated probability per label
    labels: list[str]  # labels whose score reaches the stored threshold


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Overflow-free: a sharp temperature makes logits of several hundred, where exp(-x) overflows."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def default_threads() -> int:
    """CPUs this process may really use: affinity, capped by a cgroup quota, at most 4.

    More intra-op threads than cores only adds contention; beyond ~4 a small
    encoder barely scales on CPU, so spare cores are better used by more processes.
    """
    env = os.environ.get("POLICYLENS_THREADS")
    if env:
        return max(1, int(env))
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, min(4, cpus))


def score_windows(
    scorer: Scorer, windows: Sequence[Sequence[int]], pad_id: int, n_labels: int, batch_size: int
) -> np.ndarray:
    """Raw logits of every window, batched by similar length so padding stays small."""
    out = np.zeros((len(windows), n_labels), dtype=np.float32)
    for batch in length_sorted_batches([len(w) for w in windows], batch_size):
        ids, mask = pad_batch([windows[i] for i in batch], pad_id)
        out[batch] = scorer(ids, mask)
    return out


def torch_window_logits(model, tokenizer, texts: Sequence[str], meta: TaggerMeta, batch_size: int = 32) -> np.ndarray:
    """Pooled raw logits [len(texts), n_labels] from a torch sequence-classification model (training/eval path)."""
    if not texts:
        return np.zeros((0, len(meta.taxonomy)), dtype=np.float32)
    windows, owners = tokenize_windows(tokenizer, texts, meta.max_length, meta.stride, meta.prefix)
    was_training = model.training
    model.eval()
    try:
        out = score_windows(TorchScorer(model), windows, tokenizer.pad_token_id, len(meta.taxonomy), batch_size)
    finally:
        model.train(was_training)
    return pool_windows(out, owners, len(texts), meta.pooling)


class TorchScorer:
    """A transformers sequence-classification model as a Scorer."""

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            logits = self.model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits
        return logits.float().numpy()


class WindowTokenizer:
    """The model dir's tokenizer.json driven directly through `tokenizers` (no transformers, no torch).

    Produces exactly the windows of inference.windows.tokenize_windows (same
    truncation-with-stride machinery underneath; a test pins the equality),
    which keeps the ONNX path free of a ~250 MB torch import.
    """

    def __init__(self, model_dir: Path, meta: TaggerMeta) -> None:
        from tokenizers import Tokenizer

        path = model_dir / "tokenizer.json"
        if not path.exists():
            raise InputError(f"{model_dir}: no tokenizer.json (save the tagger with a fast tokenizer)")
        self._tok = Tokenizer.from_file(str(path))
        self._tok.no_padding()
        self._tok.enable_truncation(meta.max_length, stride=meta.stride)
        self.prefix = meta.prefix
        config = model_dir / "tokenizer_config.json"
        pad_token = "<pad>"
        if config.exists():
            pad_token = json.loads(config.read_text(encoding="utf-8")).get("pad_token") or pad_token
            pad_token = pad_token["content"] if isinstance(pad_token, dict) else pad_token
        pad_id = self._tok.token_to_id(pad_token)
        self.pad_id = 0 if pad_id is None else pad_id

    def __call__(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        windows: list[list[int]] = []
        owners: list[int] = []
        for i, encoding in enumerate(self._tok.encode_batch([self.prefix + t for t in texts])):
            for window in (encoding, *encoding.overflowing):
                windows.append(window.ids)
                owners.append(i)
        return windows, np.asarray(owners, dtype=np.int64)


def model_settings(model_dir: str | Path) -> dict[str, Any]:
    """The optional `inference` block of policylens.json (e.g. {"backend": "onnx"}); TaggerMeta ignores it."""
    path = Path(model_dir) / META_FILE
    try:
        block = json.loads(path.read_text(encoding="utf-8")).get("inference") or {}
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}
    return block if isinstance(block, dict) else {}


def model_version(model_dir: str | Path, meta: TaggerMeta) -> str:
    """meta.version, or a hash of policylens.json for models saved without one."""
    if meta.version:
        return meta.version
    return "sha-" + hashlib.sha256((Path(model_dir) / META_FILE).read_bytes()).hexdigest()[:12]


class Predictor:
    """Paragraph tagger and document analyser over one model directory.

    backend: "torch" (safetensors weights) or "onnx" (onnx/model.int8.onnx,
    exported on first use when missing); None = the model dir's
    policylens.json `inference.backend`, else "torch".
    summarizer: "auto" loads inference.summarize.Summarizer lazily on the
    first analyze(); None disables summaries; or pass any object with
    `.summarize(document, paragraph_labels=...)`.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        backend: str | None = None,
        batch_size: int = 8,  # small batches beat large ones on CPU (cache), measured 8/16/32/64
        num_threads: int | None = None,
        summarizer: Any = "auto",
        aggregate: AggregateConfig | None = None,
        segment_config: SegmentConfig | None = None,
        summary_chars: int | None = None,  # None: the summariser's own budget (~6% of the body)
    ) -> None:
        self.model_dir = follow_pointer(model_dir)
        self.meta = TaggerMeta.load(self.model_dir)
        self.backend = backend or model_settings(self.model_dir).get("backend") or "torch"
        if self.backend not in BACKENDS:
            raise InputError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.num_threads = num_threads or default_threads()
        self.labels = self.meta.taxonomy.ids
        self.version = model_version(self.model_dir, self.meta)
        self.aggregate = aggregate or AggregateConfig()
        self.segment_config = segment_config or SegmentConfig()
        self.summary_chars = summary_chars
        self._thresholds = np.asarray(self.meta.thresholds, dtype=np.float32)
        self._temperature = np.asarray(self.meta.temperature, dtype=np.float32)
        self._windows = WindowTokenizer(self.model_dir, self.meta)
        self._scorer = self._load_scorer()
        self._summarizer: Any = None if summarizer == "auto" else summarizer
        self._summarizer_state = "pending" if summarizer == "auto" else ("off" if summarizer is None else "ready")
        self._summarizer_error: str | None = "summaries disabled" if summarizer is None else None

    def _load_scorer(self) -> Scorer:
        if self.backend == "onnx":
            from inference.onnx_backend import load_onnx_scorer

            return load_onnx_scorer(self.model_dir, num_threads=self.num_threads)
        import torch
        from transformers import AutoModelForSequenceClassification

        if not (self.model_dir / "model.safetensors").exists():
            raise InputError(f"{self.model_dir}: no model.safetensors (only safetensors weights are loaded)")
        torch.set_num_threads(self.num_threads)
        self.model = AutoModelForSequenceClassification.from_pretrained(self.model_dir, use_safetensors=True)
        self.model.eval()
        return TorchScorer(self.model)

    @property
    def tokenizer(self):
        """The transformers tokenizer (loaded on demand: the hot path uses the Rust tokenizer directly)."""
        if not hasattr(self, "_hf_tokenizer"):
            from transformers import AutoTokenizer

            self._hf_tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        return self._hf_tokenizer

    # -- paragraphs ---------------------------------------------------------

    def _logits_normalized(self, texts: Sequence[str]) -> np.ndarray:
        """Pooled raw logits of already-normalised texts; each distinct text is scored once."""
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        windows, owners = self._windows(list(unique))
        out = score_windows(self._scorer, windows, self._windows.pad_id, len(self.labels), self.batch_size)
        return pool_windows(out, owners, len(unique), self.meta.pooling)[inverse.reshape(-1)]

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        return self._logits_normalized([normalize(t) for t in texts])

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return sigmoid(self.logits(texts) / self._temperature)

    def _tags(self, probs: np.ndarray) -> list[tuple[dict[str, float], list[str]]]:
        rows = []
        for row in probs:
            scores = {label: round(float(p), 4) for label, p in zip(self.labels, row)}
            labels = [label for label, p, t in zip(self.labels, row, self._thresholds) if p >= t]
            rows.append((scores, labels))
        return rows

    def predict(self, texts: Sequence[str]) -> list[ParagraphTags]:
        probs = self.predict_proba(texts)
        tags = self._tags(probs)
        return [ParagraphTags(text=text, scores=scores, labels=labels) for text, (scores, labels) in zip(texts, tags)]

    # -- documents ----------------------------------------------------------

    def analyze(self, documents: Sequence[Document], *, summary: bool = True) -> list[DocumentAnalysis]:
        """Segment (unless already segmented), tag every paragraph of every document in one
        batched pass, aggregate per document, summarise. Results are in input order."""
        per_doc = [document.paragraphs or segment(document, self.segment_config) for document in documents]
        flat = [p.text for paragraphs in per_doc for p in paragraphs]
        probs = sigmoid(self._logits_normalized(flat) / self._temperature)
        tags = iter(self._tags(probs))
        results = []
        for document, paragraphs in zip(documents, per_doc):
            tagged = []
            for paragraph in paragraphs:
                scores, labels = next(tags)
                tagged.append(TaggedParagraph(paragraph=paragraph, scores=scores, labels=tuple(labels)))
            view, error = self._summarize(document, tagged) if summary else (None, None)
            results.append(
                build_analysis(
                    document, tagged, self.labels, summary=view, summary_error=error,
                    model_version=self.version, config=self.aggregate,
                )
            )
        return results

    def _summarize(self, document: Document, tagged: list[TaggedParagraph]) -> tuple[SummaryView | None, str | None]:
        summarizer = self.summarizer
        if summarizer is None:
            return None, self._summarizer_error
        try:
            result = summarizer.summarize(
                document,
                paragraph_labels={p.paragraph.id: list(p.labels) for p in tagged},
                max_chars=self.summary_chars,
            )
        except Exception as err:  # one document the summariser cannot handle must not lose its tags
            return None, f"summariser failed: {type(err).__name__}: {err}"
        return SummaryView.from_summary(result, document), None

    @property
    def summarizer(self) -> Any:
        """The summariser, loaded once on first use; None (with a reason kept) when unavailable."""
        if self._summarizer_state == "pending":
            try:
                from inference.summarize import Summarizer

                self._summarizer = Summarizer.load(num_threads=self.num_threads)
                self._summarizer_state = "ready"
            except Exception as err:  # missing module or model: analyses still come back, without summary
                self._summarizer_state = "off"
                self._summarizer_error = f"summariser unavailable: {type(err).__name__}: {err}"
                print(f"policylens: {self._summarizer_error}; analysing without summaries", file=sys.stderr)
        return self._summarizer
