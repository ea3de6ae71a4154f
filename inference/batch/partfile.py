"""The resumable part-file: an append-only store of finished records, one JSON line each.

Why a sidecar `<out>.part`: every finished document is appended (flushed at
once, fsynced every few seconds) keyed by a content hash of the document and the
model version + run settings, so an interrupted run loses at most the chunk in
flight and `--resume` re-tags only new or changed documents. A finished JSON
Lines output doubles as a record store for later resumes (`seed_from_output`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from policylens.document import Document

PART_SUFFIX = ".part"

Record = dict[str, Any]
Log = Callable[[str], None]


def document_key(document: Document, settings: str) -> str:
    """Content hash of the document (id and text) and the model version + run settings."""
    digest = hashlib.sha256()
    for part in (settings, document.id, document.text):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


def error_record(source: str | None, message: str, doc_id: str | None = None) -> Record:
    """The record that stands in for a document that could not be read or tagged (kept in input order)."""
    return {"error": message, "source": source, "id": doc_id}


class PartFile:
    """Completed records, one JSON line each, indexed by key -> byte offset.

    Opening repairs an interrupted write: a torn last line is cut off. Every
    append is flushed to the OS at once (survives Ctrl-C and kills); fsync, which
    only guards against a machine crash, runs at most every `sync_seconds`.
    """

    def __init__(self, path: Path, sync_seconds: float = 2.0) -> None:
        self.path = path
        self.index: dict[str, int] = {}
        self.sync_seconds = sync_seconds
        self._synced = time.monotonic()
        path.parent.mkdir(parents=True, exist_ok=True)
        good_end = 0
        if path.exists():
            with path.open("rb") as handle:
                for line in handle:
                    try:
                        record = json.loads(line)
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        break  # torn by an interruption: everything from here on is redone
                    if not line.endswith(b"\n"):
                        break
                    if isinstance(record, dict) and record.get("key"):
                        self.index[record["key"]] = good_end
                    good_end += len(line)
            if good_end < path.stat().st_size:
                os.truncate(path, good_end)
        self._handle = path.open("ab")

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def append(self, records: Sequence[Record]) -> None:
        for record in records:
            offset = self._handle.tell()
            self._handle.write((json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8"))
            self.index[record["key"]] = offset
        self._handle.flush()
        if time.monotonic() - self._synced >= self.sync_seconds:
            self.sync()

    def sync(self) -> None:
        os.fsync(self._handle.fileno())
        self._synced = time.monotonic()

    def read(self, key: str) -> Record:
        with self.path.open("rb") as handle:
            handle.seek(self.index[key])
            return json.loads(handle.readline())

    def close(self) -> None:
        if not self._handle.closed:
            self.sync()
            self._handle.close()


def seed_from_output(part: PartFile, out: Path, log: Log) -> None:
    """A finished JSON Lines output is itself a record store: copy its records into the part-file."""
    records = []
    with out.open("rb") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(record, dict) and record.get("key") and record["key"] not in part:
                records.append(record)
    if records:
        part.append(records)
        log(f"resume: {len(records)} documents found in {out}")
