"""Encode every sentence once per run: an in-memory cache keyed by a hash of the sentence.

Why: within one `policylens tag` run the same sentence comes back many times (the
boilerplate of a ministry's notices, a document summarised whole and per domain,
a re-sent request), and the batch engine encodes all sentences of a chunk of
documents in one pass (Summarizer.prepare) before each document is summarised.
Keys are 16-byte blake2b digests, so the cache holds vectors, not texts.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def sentence_key(text: str, kind: str = "passage") -> bytes:
    """Digest of (kind, text): a query and a passage of the same text embed differently."""
    return hashlib.blake2b(f"{kind}\x00{text}".encode("utf-8"), digest_size=16).digest()


class CachedEncoder:
    """Wraps any sentence encoder (torch SentenceEncoder, OnnxSentenceEncoder): looks each sentence
    up by its hash, encodes only the misses, in one batched call per encode(), and keeps the
    most recently used `capacity` vectors. hits/misses count sentences."""

    def __init__(self, encoder: Any, capacity: int = 200_000) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.inner = encoder
        self.capacity = capacity
        self._vectors: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    # the encoder interface, passed through
    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        return int(self.inner.dim)

    @property
    def max_length(self) -> int:
        return int(self.inner.max_length)

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    def __len__(self) -> int:
        return len(self._vectors)

    def _put(self, key: bytes, vector: np.ndarray) -> None:
        self._vectors[key] = vector
        self._vectors.move_to_end(key)
        while len(self._vectors) > self.capacity:
            self._vectors.popitem(last=False)

    def prime(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Remember precomputed vectors (e.g. from the on-disk store) so encode() skips them."""
        for text, vector in zip(texts, vectors):
            self._put(sentence_key(text), np.asarray(vector, dtype=np.float32))

    def encode(self, texts: Sequence[str], progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        keys = [sentence_key(t) for t in texts]
        missing: dict[bytes, str] = {}
        for key, text in zip(keys, texts):
            if key not in self._vectors and key not in missing:
                missing[key] = text
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        fresh: dict[bytes, np.ndarray] = {}
        if missing:
            vectors = self.inner.encode(list(missing.values()))
            fresh = {key: np.asarray(v, dtype=np.float32) for key, v in zip(missing, vectors)}
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, key in enumerate(keys):
            vector = fresh.get(key)
            if vector is None:
                vector = self._vectors[key]
                self._vectors.move_to_end(key)
            out[i] = vector
        for key, vector in fresh.items():
            self._put(key, vector)
        return out

    def encode_query(self, text: str) -> np.ndarray:
        key = sentence_key(text, "query")
        if key in self._vectors:
            self.hits += 1
            self._vectors.move_to_end(key)
            return self._vectors[key]
        self.misses += 1
        vector = np.asarray(self.inner.encode_query(text), dtype=np.float32)
        self._put(key, vector)
        return vector
