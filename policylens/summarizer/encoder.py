"""The summariser's sentence encoder at run time: a static int8 ONNX e5, no torch.

Why: the frozen e5 sentence pass in PyTorch fp32 cost as much as tagging itself
(`policylens tag` was ~5x slower with summaries). The exported graph (made by
inference/sentence_onnx.py, the tagger's static-QDQ int8 machinery) keeps the
lower `layers` of e5-small and returns the mean-pooled, L2-normalised sentence
embedding directly. Activation scales are fixed at export, so a sentence's vector
never depends on its batch-mates, and training and serving read the very same
file: the scorer is trained on the embeddings it will see.

Directory (default models/encoders/e5-small-sentence-int8/):
  model.int8.onnx   input_ids, attention_mask -> embedding [batch, dim]
  tokenizer.json    the backbone's tokenizer
  export.json       backbone, layers, max_length, prefixes, calibration, fingerprint
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from policylens.io import InputError
from policylens.paths import MODELS_DIR

SENTENCE_ENCODER_DIR = MODELS_DIR / "encoders" / "e5-small-sentence-int8"
DEFAULT_LAYERS = 6
MODEL_FILE = "model.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
EXPORT_FILE = "export.json"
EXPORT_FORMAT = 1  # bumped when the graph's inputs/outputs or the export recipe change


def encoder_dir(layers: int = DEFAULT_LAYERS) -> Path:
    """Where the export keeping `layers` layers lives: the default directory for the default depth,
    a sibling named after the depth otherwise (so comparing depths never overwrites the default)."""
    return SENTENCE_ENCODER_DIR if layers == DEFAULT_LAYERS else \
        SENTENCE_ENCODER_DIR.with_name(f"{SENTENCE_ENCODER_DIR.name}-L{layers}")


def read_export_info(directory: str | Path) -> dict[str, Any]:
    """export.json of an exported encoder ({} when missing or unreadable)."""
    try:
        info = json.loads((Path(directory) / EXPORT_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return info if isinstance(info, dict) else {}


def is_exported(directory: str | Path) -> bool:
    directory = Path(directory)
    info = read_export_info(directory)
    return (info.get("format") == EXPORT_FORMAT and (directory / MODEL_FILE).is_file()
            and (directory / TOKENIZER_FILE).is_file() and bool(info.get("fingerprint")))


class OnnxSentenceEncoder:
    """Sentence embeddings from the exported int8 graph: the SentenceEncoder interface
    (name, dim, max_length, fingerprint, encode, encode_query, prime) without torch."""

    def __init__(self, directory: str | Path = SENTENCE_ENCODER_DIR, *, num_threads: int | None = None,
                 batch_size: int = 32) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        directory = Path(directory)
        if not is_exported(directory):
            raise InputError(f"{directory}: no exported sentence encoder there (needs {MODEL_FILE}, {TOKENIZER_FILE} "
                             f"and {EXPORT_FILE} of format {EXPORT_FORMAT}); run `policylens train-summarizer`, "
                             "which exports it")
        self.info = read_export_info(directory)
        self.name = str(directory)
        self.dim = int(self.info["dim"])
        self.max_length = int(self.info["max_length"])
        self.prefix = str(self.info.get("prefix", "passage: "))
        self.query_prefix = str(self.info.get("query_prefix", "query: "))
        self.batch_size = batch_size
        self._pad_id = int(self.info.get("pad_id", 1))
        self._tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(self.max_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, num_threads or 1)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(directory / MODEL_FILE), options, providers=["CPUExecutionProvider"])
        self._output = self._session.get_outputs()[0].name

    @property
    def fingerprint(self) -> str:
        """Identity of the embeddings (backbone weights, layers, truncation, quantisation): keys caches
        and is recorded with the scorer trained on them."""
        return f"onnx-int8:{self.info['fingerprint']}"

    def prime(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Nothing to remember here: the per-run cache is summarizer.embedding_cache.CachedEncoder."""

    def _run(self, ids: list[list[int]]) -> np.ndarray:
        width = max(len(x) for x in ids)
        input_ids = np.full((len(ids), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for row, tokens in enumerate(ids):
            input_ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        return self._session.run([self._output], {"input_ids": input_ids, "attention_mask": mask})[0]

    def encode(self, texts: Sequence[str], progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """[len(texts), dim] float32, L2-normalised; batches of similar length (little padding)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = [e.ids for e in self._tokenizer.encode_batch([self.prefix + t for t in texts])]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for n, k in enumerate(range(0, len(order), self.batch_size)):
            batch = order[k : k + self.batch_size]
            out[batch] = self._run([ids[i] for i in batch])
            if progress and n % 20 == 0:
                progress(k + len(batch), len(order))
        return out

    def encode_query(self, text: str) -> np.ndarray:
        """e5 embeds search queries with "query: " (a domain description looking for passages)."""
        return self._run([self._tokenizer.encode(self.query_prefix + text).ids])[0]
