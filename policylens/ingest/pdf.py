"""Read the text layer of a PDF; lines are re-flowed into paragraphs by `reflow`.

Scanned PDFs have no text layer: say so (OCR first) instead of returning nothing.
"""

from __future__ import annotations

import io
import re
import unicodedata
from pathlib import Path
from typing import Any

from policylens.ingest.base import Extracted, IngestError
from policylens.ingest.reflow import reflow_pages

# Word exports map some CJK characters to look-alike radicals (U+2F00 "⼀" for "一").
_RADICALS = re.compile(r"[\u2e80-\u2eff\u2f00-\u2fdf]")
_PLACEHOLDER_TITLE = re.compile(r"untitled|无标题|document\d*|文档\d*|新建.*文档.*|幻灯片\s*\d*", re.I)


def read_pdf(data: bytes, path: str | Path) -> Extracted:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):  # owner-password-only PDFs open with ""
            raise IngestError(path, "PDF is encrypted (needs a password)")
        pages = [page.extract_text() or "" for page in reader.pages]
    except IngestError:
        raise
    except (FileNotDecryptedError, DependencyError) as err:
        raise IngestError(path, f"PDF is encrypted and cannot be read ({err})") from None
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError) as err:
        raise IngestError(path, f"not a valid PDF file ({type(err).__name__}: {err})") from None
    if not pages:
        raise IngestError(path, "PDF has no pages")
    if not any(page.strip() for page in pages):
        raise IngestError(path, "PDF has no text layer (scanned?); OCR it first")

    text = reflow_pages([[_fix_radicals(line) for line in page.splitlines()] for page in pages])
    meta: dict[str, Any] = {"format": "pdf", "pages": len(pages)}
    title = None
    try:  # damaged metadata must not cost the text
        info = reader.metadata
        if info is not None:
            title = _clean_title(info.title)
            if info.creation_date is not None:  # file creation, not the publication date
                meta["created"] = info.creation_date.date().isoformat()
    except Exception:
        pass
    return Extracted(text, title, meta)


def _fix_radicals(line: str) -> str:
    return _RADICALS.sub(lambda m: unicodedata.normalize("NFKC", m.group()), line)


def _clean_title(title: object) -> str | None:
    if not isinstance(title, str):
        return None
    title = re.sub(r"^Microsoft (Word|PowerPoint) - ", "", title.strip())
    title = re.sub(r"\.(docx?|wps|pdf)$", "", title, flags=re.I).strip()
    if _PLACEHOLDER_TITLE.fullmatch(title):  # tools' defaults, not the document's title
        return None
    return title or None
