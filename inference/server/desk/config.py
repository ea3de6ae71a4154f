"""The review desk's settings, validated once (the CLI and tests build them; the routes read them)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TOKEN_ENV = "POLICYLENS_WRITE_TOKEN"
TOKEN_HEADER = "X-Write-Token"
# What the inbox reads: the suffixes `policylens tag` reads, minus stdin.
UPLOAD_SUFFIXES = (".txt", ".md", ".text", ".html", ".htm", ".shtml", ".docx", ".pdf", ".jsonl", ".ndjson", ".json")


@dataclass(frozen=True)
class DeskConfig:
    """How the desk may be used.

    read_only: when set, the reason every write (upload, correct, retrain, promote, rollback) is refused (403).
    write_token: when set, a write must carry it in the X-Write-Token header (else 403).
    data_dir: where the inbox keeps its documents (one JSON file each); None: in memory only.
    max_upload_bytes: most bytes of files in one upload (decoded); more answers 413.
    max_files: most files in one upload.
    max_paste_chars: longest pasted text.
    max_documents: most documents one upload may hold (a JSON Lines corpus); the rest are refused.
    chunk_paragraphs: paragraphs tagged per model call (progress steps; API requests run in between).
    low_confidence: a paragraph is marked when some label's score is this close to its threshold,
        relative to the distance to 0 or 1 (suggest's uncertainty >= 1 - low_confidence).
    review_n: length of the to-review queue.
    """

    read_only: str | None = None  # why every write is refused (None: writes allowed)
    write_token: str | None = None
    data_dir: Path | None = None
    max_upload_bytes: int = 25 * 1024 * 1024
    max_files: int = 20
    max_paste_chars: int = 1_000_000
    max_documents: int = 200
    chunk_paragraphs: int = 64
    low_confidence: float = 0.2
    review_n: int = 30

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_files", "max_paste_chars", "max_documents", "chunk_paragraphs", "review_n"):
            if getattr(self, name) < 1:
                raise ValueError(f"desk {name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.low_confidence < 1:
            raise ValueError(f"desk low_confidence must be in (0, 1), got {self.low_confidence}")
        if self.write_token is not None and len(self.write_token) < 8:
            raise ValueError("the write token must have at least 8 characters")
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", Path(self.data_dir))

    @property
    def max_body_bytes(self) -> int:
        """Largest upload request body: base64 (4/3) of the file limit, plus room for names and pasted text."""
        return self.max_upload_bytes * 4 // 3 + self.max_paste_chars * 4 + 64 * 1024


def token_from_env(env: dict[str, str] | None = None) -> str | None:
    value = (os.environ if env is None else env).get(TOKEN_ENV, "").strip()
    return value or None
