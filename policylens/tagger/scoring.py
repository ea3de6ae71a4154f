"""Score paragraphs with a tagger directory on CPU: the hot path shared by training and serving.

Tokenise all windows in one Rust call, run them in length-sorted batches with
dynamic padding under `inference_mode`, pool the window logits per paragraph,
calibrate, threshold. Nothing is loaded or re-tokenised per call; identical
paragraph texts are scored once. The ONNX backend and the document view
(inference/) plug in a different Scorer on top of the same steps.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from policylens.calibration import sigmoid
from policylens.chinese import normalize
from policylens.encoders.windows import (
    length_sorted_batches,
    pad_batch,
    pool_windows,
    tokenize_windows,
)
from policylens.io import InputError
from policylens.tagger.ensemble import Combiner, combiner_from_dict
from policylens.tagger.lexical import LexicalModel
from policylens.tagger.model_dir import (
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    TaggerMeta,
    check_safetensors_header,
    follow_pointer,
    model_version,
    one_line,
    read_json_file,
    read_model_config,
    verify_manifest,
)

# A scorer maps one padded batch (input_ids, attention_mask) to raw logits [batch, n_labels].
Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


# A small built-in smoke set: every load scores it, and `models verify`, `models promote`
# and the server's hot swap require finite scores in [0, 1] on it (one paragraph long
# enough to span several windows, so pooling runs too).
SMOKE_PARAGRAPHS = (
    "加快推进5G网络和数据中心等新型基础设施建设，扩大千兆光网覆盖范围，推动工业互联网平台在重点行业规模化应用。",
    "支持专精特新中小企业发展，落实减税降费政策，优化营商环境，降低中小企业融资成本。",
    "实施绿色制造工程，推动钢铁、建材等重点行业节能降碳改造，确保如期实现碳达峰目标。",
    (
        "围绕重点产业链开展强链补链行动，加强关键核心技术攻关，提升产业链供应链韧性和安全水平，"
        "支持龙头企业带动上下游协同发展，推动集成电路、新能源汽车、生物医药等产业集群建设，"
        "完善原材料和关键零部件储备保障机制，畅通国内国际双循环。"
    ),
)


def not_finite_error(model_dir: Path) -> InputError:
    return InputError(f"{model_dir}: scores are not finite: the weights are corrupt")


def score_problems(model_dir: Path, probs: np.ndarray) -> list[str]:
    """Why calibrated scores cannot come from a sound model: non-finite, or outside [0, 1]."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.size and not np.isfinite(probs).all():
        return [str(not_finite_error(model_dir))]
    if probs.size and (probs.min() < 0.0 or probs.max() > 1.0):
        return [f"{model_dir}: scores outside [0, 1] ({probs.min():.4g} … {probs.max():.4g}): the model is corrupt"]
    return []


@dataclass(frozen=True)
class ParagraphTags:
    text: str
    scores: dict[str, float]  # calibrated probability per label
    labels: list[str]  # labels whose score reaches the stored threshold


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

    Produces exactly the windows of policylens.encoders.windows.tokenize_windows (same
    truncation-with-stride machinery underneath; a test pins the equality),
    which keeps the ONNX path free of a ~250 MB torch import.
    """

    def __init__(self, model_dir: Path, meta: TaggerMeta) -> None:
        from tokenizers import Tokenizer

        path = model_dir / TOKENIZER_FILE
        if not path.exists():
            raise InputError(f"{model_dir}: no tokenizer.json (save the tagger with a fast tokenizer)")
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as err:  # noqa: BLE001 - the Rust loader raises a bare Exception on a bad file
            raise InputError(f"{path}: not a valid tokenizer file ({one_line(err)})") from None
        self._tok.no_padding()
        self._tok.enable_truncation(meta.max_length, stride=meta.stride)
        self.prefix = meta.prefix
        config = model_dir / "tokenizer_config.json"
        pad_token = "<pad>"
        if config.exists():
            settings = read_json_file(config)
            if not isinstance(settings, dict):
                raise InputError(f"{config}: expected a JSON object, got {type(settings).__name__}")
            pad_token = settings.get("pad_token") or pad_token
            pad_token = pad_token.get("content", "<pad>") if isinstance(pad_token, dict) else str(pad_token)
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


class Tagger:
    """A tagger directory loaded once for scoring paragraphs (PyTorch weights).

    Subclasses swap the Scorer (inference.predictor.Predictor adds ONNX and the
    document view); the windowing, pooling, calibration and thresholds stay here.
    """

    def __init__(
        self, model_dir: str | Path, *, batch_size: int = 8, num_threads: int | None = None, check_files: bool = True
    ) -> None:
        # check_files=False skips the manifest comparison (integrity.check_model_dir reports it itself)
        # batch_size 8: small batches beat large ones on CPU (cache), measured 8/16/32/64
        self.model_dir = follow_pointer(model_dir)
        self.meta = TaggerMeta.load(self.model_dir)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.num_threads = num_threads or default_threads()
        self.labels = self.meta.taxonomy.ids
        self.version = model_version(self.model_dir, self.meta)
        self._thresholds = np.asarray(self.meta.thresholds, dtype=np.float32)
        self._temperature = np.asarray(self.meta.temperature, dtype=np.float32)
        self._windows = WindowTokenizer(self.model_dir, self.meta)
        self._scorer = self._load_scorer()
        self._combiner, self._lexical = self._load_ensemble()
        # Files overwritten or truncated since they were recorded are refused, even when they still
        # parse (random bytes over a tensor load fine).
        if check_files:
            verify_manifest(self.model_dir, skip=self._files_not_read())
        self.smoke_test()

    def _files_not_read(self) -> tuple[str, ...]:
        """Model-dir files this scorer never reads, left out of the load-time hash check."""
        return ()

    def _load_ensemble(self) -> tuple[Combiner | None, LexicalModel | None]:
        """The combiner and lexical model of an ensemble tagger; (None, None) for an encoder-only one."""
        if self.meta.stack is None:
            return None, None
        lexical = LexicalModel.load(self.model_dir)
        if lexical.labels != self.labels:
            raise InputError(f"{self.model_dir}: the lexical model's labels {lexical.labels} differ from {self.labels}")
        return combiner_from_dict(self.meta.stack), lexical

    def smoke_test(self) -> None:
        """Score the built-in smoke set; InputError unless every score is finite and in [0, 1]."""
        problems = score_problems(self.model_dir, self.predict_proba(list(SMOKE_PARAGRAPHS)))
        if problems:
            raise InputError(problems[0])

    def _load_scorer(self) -> Scorer:
        if not (self.model_dir / WEIGHTS_FILE).exists():
            raise InputError(f"{self.model_dir}: no model.safetensors (only safetensors weights are loaded)")
        read_model_config(self.model_dir)  # a missing or broken config.json, named
        check_safetensors_header(self.model_dir)  # a truncated or garbage weights file, named
        import torch
        from transformers import AutoModelForSequenceClassification

        torch.set_num_threads(self.num_threads)
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(self.model_dir, use_safetensors=True)
        except Exception as err:  # noqa: BLE001 - config and weights that parse but do not fit (shapes, fields)
            raise InputError(f"{self.model_dir}: the model does not load from config.json + model.safetensors "
                             f"({type(err).__name__}: {one_line(err)})") from None
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
        if not np.isfinite(out).all():  # NaN weights would otherwise come out as NaN scores and arbitrary labels
            raise not_finite_error(self.model_dir)
        return pool_windows(out, owners, len(unique), self.meta.pooling)[inverse.reshape(-1)]

    def _probs_normalized(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated probabilities of already-normalised texts: the stack of encoder and lexical
        logits for an ensemble, the temperature-scaled encoder alone otherwise."""
        encoder = self._logits_normalized(texts)
        if self._combiner is None:
            return sigmoid(encoder / self._temperature)
        return self._combiner.probs(encoder, self._lexical.decision_function(texts))

    def calibrated_encoder_proba(self, texts: Sequence[str]) -> np.ndarray:
        """The encoder alone, temperature-calibrated: what the tagger scores without its lexical half."""
        return sigmoid(self.logits(texts) / self._temperature)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """The encoder's raw pooled logits (without the lexical half of an ensemble)."""
        return self._logits_normalized([normalize(t) for t in texts])

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self._probs_normalized([normalize(t) for t in texts])

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
