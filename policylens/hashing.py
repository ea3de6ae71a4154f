"""Stable hashes: the same input gives the same number on every machine and run.

Python's hash() is salted per process, so splits and ids use sha256.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from policylens.chinese import normalize


def seeded_int(seed: int, key: str) -> int:
    """A 48-bit integer from (seed, key): document-to-split assignment and sampling."""
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:12], 16)


def seeded_unit(seed: int, key: str) -> float:
    """seeded_int scaled to [0, 1)."""
    return seeded_int(seed, key) / 16**12


def text_hash(text: str) -> str:
    """Identity of a paragraph for duplicate detection: sha256 of its normalised text."""
    return hashlib.sha256(normalize(text).encode("utf-8")).hexdigest()[:16]


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
