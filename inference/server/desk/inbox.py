"""The inbox: the documents uploaded to the desk, with their tagged records.

Each entry is kept in memory and, when the desk has a data dir, in one JSON file
(`<data_dir>/docs/<key>.json`, written atomically), so the inbox survives a restart.
The entry keeps the document text beside the record: per-domain summaries and
re-tagging with a newly promoted model need it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from policylens.io import utc_timestamp, write_json

log = logging.getLogger("policylens.desk")
_SLUG = re.compile(r"[^A-Za-z0-9_-]+")
KEY = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


def entry_key(doc_id: str, text: str) -> str:
    """URL-safe and stable: the document id's ASCII part and a hash of id and text."""
    digest = hashlib.sha256(f"{doc_id}\n{text}".encode()).hexdigest()[:10]
    slug = _SLUG.sub("-", doc_id).strip("-")[:40] or "doc"
    return f"{slug}-{digest}"


@dataclass
class Entry:
    key: str
    record: dict[str, Any]  # DocumentAnalysis.to_dict(): what `policylens tag --format jsonl` writes
    text: str  # the document's text, as read
    filename: str  # the uploaded file it came from
    thresholds: dict[str, float]  # of the model that tagged it (low-confidence marks)
    uploaded: str = field(default_factory=utc_timestamp)
    tagged: str = field(default_factory=utc_timestamp)

    @property
    def title(self) -> str:
        return self.record.get("title") or self.record["id"]

    @property
    def date(self) -> str:
        """The document's own date when its source gave one, else the upload day."""
        meta = self.record.get("meta") or {}
        return str(meta.get("date") or meta.get("published") or self.uploaded[:10])


class Inbox:
    """Entries by key; thread-safe (jobs add entries while requests read them)."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.dir = Path(data_dir) / "docs" if data_dir is not None else None
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()
        if self.dir is not None and self.dir.is_dir():
            for path in sorted(self.dir.glob("*.json")):
                try:
                    entry = Entry(**json.loads(path.read_text(encoding="utf-8")))
                except (OSError, ValueError, TypeError) as err:
                    log.warning("inbox: skipping unreadable %s (%s)", path, err)
                    continue
                self._entries[entry.key] = entry

    def put(self, entry: Entry) -> None:
        if self.dir is not None:
            write_json(self.dir / f"{entry.key}.json", asdict(entry))
        with self._lock:
            self._entries[entry.key] = entry

    def get(self, key: str) -> Entry | None:
        with self._lock:
            return self._entries.get(key)

    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
