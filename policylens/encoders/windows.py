"""Long paragraphs are cut into overlapping token windows, never silently truncated."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def tokenize_windows(
    tokenizer, texts: Sequence[str], max_length: int, stride: int, prefix: str = ""
) -> tuple[list[list[int]], np.ndarray]:
    """Token ids of every window, and for each window the index of the text it came from."""
    encoded = tokenizer(
        [prefix + text for text in texts],
        truncation=True,
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    owners = np.asarray(encoded["overflow_to_sample_mapping"], dtype=np.int64)
    return list(encoded["input_ids"]), owners


def pool_windows(window_logits: np.ndarray, owners: np.ndarray, n_texts: int, how: str = "max") -> np.ndarray:
    """One row of logits per text: a label is present if any window shows it (max), or on average (mean)."""
    pooled = np.full((n_texts, window_logits.shape[1]), -np.inf if how == "max" else 0.0, dtype=np.float32)
    if how == "max":
        np.maximum.at(pooled, owners, window_logits)
    else:
        np.add.at(pooled, owners, window_logits)
        pooled /= np.bincount(owners, minlength=n_texts)[:, None]
    return pooled


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Indices grouped into batches of similar length, so padding stays small."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask
