"""Turn files, folders, globs, JSON Lines corpora and stdin into Documents.

Every reader returns text with one logical paragraph per line and leaves
boilerplate *lines* and Traditional characters to `segment` and `chinese`.
Bad inputs become IngestError values (naming file and reason) so that one bad
file in a folder of hundreds never stops the run.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import io
import json
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from policylens.document import Document
from policylens.ingest.base import NO_TEXT, Extracted, IngestError, has_text
from policylens.ingest.encoding import decode_bytes
from policylens.ingest.reflow import unwrap

__all__ = ["IngestError", "NO_TEXT", "SUPPORTED_SUFFIXES", "check_regular_file", "decode_bytes", "has_text", "iter_file",
           "iter_inputs", "read_file"]

TEXT_SUFFIXES = frozenset({".txt", ".md", ".text"})
HTML_SUFFIXES = frozenset({".html", ".htm", ".shtml"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | JSONL_SUFFIXES | {".docx", ".pdf"}
STDIN = "-"
# Formats common among Chinese government attachments that we do not read: say what to do instead.
UNSUPPORTED_HINTS = {".doc": "old Word format; save it as .docx", ".wps": "WPS format; save it as .docx",
                     ".ofd": "OFD e-document; export it to PDF", ".xls": "spreadsheet", ".xlsx": "spreadsheet",
                     ".ppt": "presentation", ".pptx": "presentation", ".rtf": "RTF; save it as .docx"}
_GLOB_CHARS = frozenset("*?[")


def read_file(path: str | Path, *, text_field: str = "text", id_field: str = "doc_id",
              title_field: str = "title", errors: list[IngestError] | None = None) -> list[Document]:
    """Read one file. Bad JSONL rows (and file errors) go to `errors` when given, else the first is raised."""
    registry = _Ids()
    documents = []
    for item in iter_file(path, text_field=text_field, id_field=id_field, title_field=title_field):
        if isinstance(item, IngestError):
            if errors is None:
                raise item
            errors.append(item)
        else:
            documents.append(registry.assign(item))
    return documents


def iter_file(path: str | Path, *, text_field: str = "text", id_field: str = "doc_id",
              title_field: str = "title") -> Iterator[Document | IngestError]:
    """Documents of one file (several for JSONL), or IngestErrors; never raises for bad content."""
    path = Path(path)
    try:
        check_regular_file(path)  # before any open(): opening a FIFO blocks forever
        if path.suffix.lower() in JSONL_SUFFIXES:
            yield from _read_json_file(path, text_field, id_field, title_field)
            return
        data = path.read_bytes()
        extracted = _extract(path, data)
        if not has_text(extracted.text):
            raise IngestError(path, NO_TEXT)
        yield _document(path, extracted)
    except IngestError as err:
        yield err
    except FileNotFoundError:
        yield IngestError(path, "no such file or directory")
    except OSError as err:
        yield IngestError(path, f"cannot read ({err.strerror or err})")
    except Exception as err:  # a reader bug must not end a batch run; report it against the file
        yield IngestError(path, f"unexpected error: {type(err).__name__}: {err}")


def iter_inputs(inputs: Iterable[str | Path] | str | Path, *, recursive: bool = True,
                text_field: str = "text", id_field: str = "doc_id", title_field: str = "title",
                stdin: IO[bytes] | None = None) -> Iterator[Document | IngestError]:
    """Expand paths, folders, glob patterns and "-" (stdin); yield Documents and IngestErrors in order.

    Folder contents are sorted, hidden entries and unsupported suffixes skipped; a file
    reached twice is read once; a repeated document id gets a short hash of its source.
    """
    if isinstance(inputs, (str, Path)):  # a lone path, not an iterable of characters
        inputs = [inputs]
    registry = _Ids()
    seen: set[Path] = set()
    options = {"text_field": text_field, "id_field": id_field, "title_field": title_field}
    for raw in inputs:
        if str(raw) == STDIN:
            items: Iterable[Document | IngestError] = _read_stdin(stdin, **options)
        else:
            items = _read_paths(raw, recursive, seen, options)
        for item in items:
            yield item if isinstance(item, IngestError) else registry.assign(item)


def _read_paths(raw: str | Path, recursive: bool, seen: set[Path],
                options: dict[str, str]) -> Iterator[Document | IngestError]:
    path = Path(raw)
    if path.is_dir():
        files = _walk(path, recursive)
        if not files:
            yield IngestError(path, f"no supported files in folder ({', '.join(sorted(SUPPORTED_SUFFIXES))})")
    elif path.exists() or path.is_symlink():
        files = [path]
    elif _GLOB_CHARS & set(str(raw)):
        files = []
        for match in sorted(glob.glob(str(raw), recursive=True)):
            found = Path(match)
            if found.is_dir():
                files.extend(_walk(found, recursive))
            elif _wanted(found):
                files.append(found)
        if not files:
            yield IngestError(raw, "no supported files match this pattern")
    else:
        yield IngestError(raw, "no such file or directory")
        return
    for file in files:
        try:
            key = file.resolve()
        except (OSError, RuntimeError):  # a symlink loop: iter_file reports it against the file
            key = Path(os.path.abspath(file))
        if key in seen:
            continue
        seen.add(key)
        yield from iter_file(file, **options)


_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"))


def check_regular_file(path: str | Path) -> None:
    """Raise IngestError unless `path` (after symlinks) is a regular file: symlink loops, broken
    symlinks, folders, FIFOs, sockets and devices are named as such and never opened."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise IngestError(path, "symlink loop (too many levels of symbolic links)") from None
        if err.errno == errno.ENOENT and os.path.islink(path):
            raise IngestError(path, "broken symlink (its target does not exist)") from None
        raise
    if stat.S_ISDIR(mode):
        raise IngestError(path, "is a directory")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "a special file")
        raise IngestError(path, f"not a regular file ({kind}); skipped without reading it")


def _wanted(path: Path) -> bool:
    """Inside folders and globs: supported suffixes only, no hidden files or Office lock files (~$x.docx)."""
    name = path.name
    return path.suffix.lower() in SUPPORTED_SUFFIXES and not name.startswith((".", "~$"))


def _walk(folder: Path, recursive: bool) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        files.extend(Path(root, name) for name in names if _wanted(Path(root, name)))
    return sorted(files, key=lambda file: file.relative_to(folder).parts)


def _extract(path: Path, data: bytes) -> Extracted:
    """Dispatch on suffix; for an unknown suffix, sniff the content."""
    suffix = path.suffix.lower()
    if suffix in HTML_SUFFIXES:
        return _reader("html")(data, path)
    if suffix in (".docx", ".pdf"):
        return _reader(suffix[1:])(data, path)
    if suffix in TEXT_SUFFIXES:
        return _plain(*decode_bytes(data, path))
    return _sniff(path, data)


def _plain(text: str, encoding: str) -> Extracted:
    text, reflowed = unwrap(text)
    return Extracted(text, None, {"format": "text", "encoding": encoding, "reflowed": reflowed})


def _sniff(path: Path, data: bytes) -> Extracted:
    suffix = path.suffix.lower()
    if suffix in UNSUPPORTED_HINTS:
        raise IngestError(path, f"unsupported format {suffix} ({UNSUPPORTED_HINTS[suffix]})")
    if data.startswith(b"%PDF-"):
        return _reader("pdf")(data, path)
    if data.startswith(b"PK\x03\x04") and b"word/" in data:
        return _reader("docx")(data, path)
    try:
        text, encoding = decode_bytes(data, path)
    except IngestError as err:
        if err.reason == "empty file":
            raise
        raise IngestError(path, "unsupported or binary file") from None
    if text.lstrip()[:100].lower().startswith(("<!doctype html", "<html")):
        return _reader("html")(data, path)
    return _plain(text, encoding)


def _reader(kind: str) -> Callable[[bytes, Path], Extracted]:
    """Import format readers lazily: reading .txt files must not need bs4, python-docx or pypdf."""
    if kind == "pdf":
        from policylens.ingest.pdf import read_pdf
        return read_pdf
    if kind == "docx":
        from policylens.ingest.docx import read_docx
        return read_docx
    from policylens.ingest.html import read_html
    return read_html


def _document(path: Path, extracted: Extracted) -> Document:
    return Document(id=path.stem or path.name, text=extracted.text, source=str(path),
                    title=extracted.title, meta=extracted.meta)


def _read_json_file(path: Path, text_field: str, id_field: str,
                    title_field: str) -> Iterator[Document | IngestError]:
    from policylens.ingest.jsonl import iter_jsonl

    with path.open("rb") as handle:
        lines: Iterable[bytes] = handle
        if path.suffix.lower() == ".json":
            lines = _json_document_rows(handle.read())
        count = 0
        for item in iter_jsonl(lines, str(path), path.stem, text_field=text_field, id_field=id_field,
                               title_field=title_field):
            count += 1
            yield item
    if count == 0:
        yield IngestError(path, "empty file")


def _json_document_rows(data: bytes) -> list[bytes]:
    """A .json file may hold one object or an array of them; otherwise it is JSON Lines.

    Array items are numbered like lines (item 1 is "file:1").
    """
    try:
        whole = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return data.splitlines(keepends=True)
    rows = whole if isinstance(whole, list) else [whole]
    return [json.dumps(row, ensure_ascii=False).encode("utf-8") for row in rows]


def _read_stdin(stream: IO[bytes] | None, *, text_field: str, id_field: str,
                title_field: str) -> Iterator[Document | IngestError]:
    """stdin: JSON Lines if the first non-space character is "{", else plain text."""
    if stream is None:
        stream = getattr(sys.stdin, "buffer", None) or io.BytesIO(sys.stdin.read().encode("utf-8"))
    data = stream.read()
    if data.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"{"):
        from policylens.ingest.jsonl import iter_jsonl
        yield from iter_jsonl(data.splitlines(keepends=True), "<stdin>", "stdin", text_field=text_field,
                              id_field=id_field, title_field=title_field)
        return
    try:
        extracted = _plain(*decode_bytes(data, "<stdin>"))
        if not has_text(extracted.text):
            raise IngestError("<stdin>", NO_TEXT)
    except IngestError as err:
        yield err
        return
    yield Document(id="stdin", text=extracted.text, source="<stdin>", meta=extracted.meta)


class _Ids:
    """Keeps document ids unique within one call: a repeat gets "-" + a short hash of its source."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def assign(self, document: Document) -> Document:
        if document.id in self.taken:
            base = f"{document.id}-{hashlib.sha1((document.source or '').encode()).hexdigest()[:8]}"
            new_id, n = base, 1
            while new_id in self.taken:
                n += 1
                new_id = f"{base}-{n}"
            document.meta["original_id"] = document.id
            document.id = new_id
        self.taken.add(document.id)
        return document
