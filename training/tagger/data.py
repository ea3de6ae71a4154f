"""Training data for the tagger: its fingerprint, token windows and batch order."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from policylens.encoders.windows import tokenize_windows
from training.tagger.config import TaggerConfig


def data_fingerprint(splits: dict[str, Any]) -> str:
    """Hash of every (split, id, text, labels): two models with the same hash saw the same data."""
    digest = hashlib.sha256()
    for split in sorted(splits):
        for row in sorted(splits[split], key=lambda r: r["id"]):
            digest.update(json.dumps([split, row["id"], row["text"], list(row["labels"])], ensure_ascii=False).encode())
    return digest.hexdigest()


def training_windows(
    tokenizer, rows: list[dict], config: TaggerConfig
) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
    """Every window of every training paragraph, with its paragraph's targets and index.

    Each window trains on its whole paragraph's labels: a long paragraph's
    label may sit in one window only, but evaluation pools windows the same way.
    """
    windows, owners = tokenize_windows(
        tokenizer, [r["text"] for r in rows], config.max_length, config.stride, config.prefix
    )
    targets = np.asarray([rows[i]["targets"] for i in owners], dtype=np.float32)
    return windows, targets, owners


def shuffled_batches(lengths: list[int], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar length: sort inside shuffled pools of 50 batches.

    Similar lengths waste little padding; the pools keep the order random
    enough that a batch is not all short or all long paragraphs by design.
    """
    order = rng.permutation(len(lengths))
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches += [np.asarray(chunk[i : i + batch_size]) for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches
