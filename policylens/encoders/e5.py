"""The frozen e5 sentence encoder, with an in-memory memo and an on-disk cache.

e5 was trained with a prefix on each side of a retrieval pair: passages get
PASSAGE_PREFIX, search queries QUERY_PREFIX. Every caller uses these constants.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from policylens.encoders.backbone import load_backbone, mean_pool, resolve_backbone
from policylens.io import write_json
from policylens.paths import SUMMARIZER_CACHE_DIR

PASSAGE_PREFIX = "passage: "
QUERY_PREFIX = "query: "


class SentenceEncoder:
    """Mean-pooled, L2-normalised e5 sentence embeddings ("passage: " prefix)."""

    def __init__(self, backbone: str | os.PathLike | None = None, *, max_length: int = 128,
                 batch_size: int = 32, num_threads: int | None = None, memo_size: int = 50_000) -> None:
        import torch


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


        enc = self.tokenizer([QUERY_PREFIX + text], truncation=True, max_length=self.max_length, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        return mean_pool(hidden, enc["attention_mask"]).float().numpy()[0]

    def encode(self, texts: Sequence[str], progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        import torch


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


def encode_cached(encoder: SentenceEncoder, texts: Sequence[str], cache_dir: Path = SUMMARIZER_CACHE_DIR,
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
