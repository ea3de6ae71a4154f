"""Read .docx files: body paragraphs and table rows in document order.

Policy notices often carry their key content in tables (lists of projects,
responsibilities), so rows become lines (cells joined by tab) instead of being lost.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

from policylens.ingest.base import Extracted, IngestError

_HEADING_STYLES = ("heading", "title", "标题")


def read_docx(data: bytes, path: str | Path) -> Extracted:
    import docx  # python-docx (absolute import: this module's own name does not shadow it)
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as err:
        raise IngestError(path, f"not a valid DOCX file ({type(err).__name__}: {err})") from None
    except Exception as err:  # python-docx/lxml raise many types for damaged packages
        raise IngestError(path, f"corrupt DOCX file ({type(err).__name__}: {err})") from None

    lines: list[str] = []
    heading: str | None = None
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            lines.extend(_table_lines(block))
            continue
        text = block.text.strip()
        if not text:
            continue
        lines.extend(part.strip() for part in text.split("\n") if part.strip())  # <w:br/> soft breaks
        style = (block.style.name if block.style is not None else "") or ""
        if heading is None and style.lower().startswith(_HEADING_STYLES):
            heading = text.replace("\n", " ")
    if not lines:
        raise IngestError(path, "DOCX file has no text")

    props = document.core_properties
    title = (props.title or "").strip() or heading
    meta: dict[str, Any] = {"format": "docx"}
    if props.created is not None:  # when the file was made, not when the policy was published
        meta["created"] = props.created.date().isoformat()
    if props.author:
        meta["author"] = props.author
    return Extracted("\n".join(lines), title, meta)


def _table_lines(table: Any) -> list[str]:
    """One line per row, cells joined by tab; a merged cell is reported once, nested tables flattened."""
    lines = []
    for row in table.rows:
        cells, seen = [], set()
        for cell in row.cells:
            if id(cell._tc) in seen:  # horizontally merged cells repeat the same <w:tc>
                continue
            seen.add(id(cell._tc))
            cells.append(" ".join(cell.text.split()))
        line = "\t".join(cells).strip()
        if line:
            lines.append(line)
    return lines
