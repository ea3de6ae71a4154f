"""Read a JSON Lines corpus (doc_id, source, title, date, text) one row at a time.

A corpus has thousands of rows; one malformed row must cost that row only,
so rows are yielded as Document or IngestError (naming file:line), never raised.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from policylens.document import Document
from policylens.ingest.base import NO_TEXT, IngestError, has_text
from policylens.ingest.reflow import unwrap


def iter_jsonl(lines: Iterable[bytes], source: str, stem: str, *, text_field: str = "text",
               id_field: str = "doc_id", title_field: str = "title") -> Iterator[Document | IngestError]:
    """Yield one Document per non-blank row, or an IngestError for a bad row; never raises for content."""
    for lineno, raw in enumerate(lines, 1):
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8").strip())
        except UnicodeDecodeError as err:
            yield IngestError(source, f"not UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
                              "JSON Lines must be UTF-8", lineno)
            continue
        except json.JSONDecodeError as err:
            yield IngestError(source, f"not valid JSON ({err.msg} at column {err.colno})", lineno)
            continue
        if not isinstance(row, dict):
            yield IngestError(source, f"expected a JSON object, got {type(row).__name__}", lineno)
            continue
        yield _row_document(row, source, stem, lineno, text_field, id_field, title_field)


def _row_document(row: dict[str, Any], source: str, stem: str, lineno: int, text_field: str,
                  id_field: str, title_field: str) -> Document | IngestError:
    text = row.get(text_field)
    if text is None:
        return IngestError(source, f"row has no {text_field!r} field", lineno)
    if not isinstance(text, str):
        return IngestError(source, f"{text_field!r} is {type(text).__name__}, expected a string", lineno)
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        return IngestError(source, f"{text_field!r} is empty", lineno)
    if not has_text(text):
        return IngestError(source, f"{text_field!r}: {NO_TEXT}", lineno)
    doc_id = row.get(id_field)
    doc_id = str(doc_id).strip() if isinstance(doc_id, (str, int)) and not isinstance(doc_id, bool) else ""
    title = row.get(title_field)
    title = title.strip() if isinstance(title, str) and title.strip() else None
    meta: dict[str, Any] = {"format": "jsonl", "corpus": source, "line": lineno}
    text, meta["reflowed"] = unwrap(text)  # rows copied out of PDFs keep the printed line breaks
    for key, value in row.items():  # source, date and any other scalar fields travel along
        if key not in (text_field, id_field, title_field) and isinstance(value, (str, int, float, bool)):
            meta.setdefault(key, value)
    return Document(id=doc_id or f"{stem}:{lineno}", text=text, source=f"{source}:{lineno}",
                    title=title, meta=meta)
