"""Reading the files analysts hand to `policylens add`: JSON Lines or CSV rows of labelled paragraphs.

Every problem is collected with its file and line, so one bad row never hides
the others and the store can refuse the whole file with a complete list.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policylens.ingest import IngestError, check_regular_file, has_text
from policylens.io import InputError

ADD_SUFFIXES = (".jsonl", ".ndjson", ".csv")


@dataclass
class Incoming:
    """One parsed input row, before it is checked against the store."""

    where: str  # file:line
    id: str
    text: str
    labels: list[str]
    doc_id: str = ""
    source: str = ""
    correction: bool = False


def describe(value: Any) -> str:
    """What a JSON value was, for type errors: "list", "dict", "int 12", "bool true", "null"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"bool {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"{type(value).__name__} {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:40] + "…"
        return f"str {shown!r}"
    return type(value).__name__


def _string_field(obj: dict, name: str, where: str, errors: list[str], what: str = "") -> str | None:
    """obj[name] as a non-blank string, or None with an error saying what the value was."""
    value = obj.get(name)
    if name not in obj or value is None:
        errors.append(f"{where}: missing {name!r}{what}")
        return None
    if not isinstance(value, str):
        errors.append(f"{where}: {name!r} must be a string, got {describe(value)}{what}")
        return None
    if not has_text(value):  # blank, or only invisible characters (U+200B ...)
        errors.append(f"{where}: empty {name!r}{what}")
        return None
    return value


def expand_inputs(paths: Iterable[str | Path], store_root: Path | None = None) -> tuple[list[Path], list[str]]:
    """The files `add` reads, and the problems found: a folder stands for its .jsonl/.ndjson/.csv files
    directly inside it (sorted, hidden files skipped; subfolders are not read); the store's own folder
    is refused."""
    files: list[Path] = []
    errors: list[str] = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(path)
            continue
        if store_root is not None and path.resolve() == store_root.resolve():
            errors.append(f"{path}: this is the label store's own folder; give the files to add")
            continue
        found = sorted(child for child in path.iterdir()
                       if child.suffix.lower() in ADD_SUFFIXES and not child.name.startswith((".", "~$")))
        if not found:
            errors.append(f"{path}: a folder with no {', '.join(ADD_SUFFIXES)} files directly inside it")
        files.extend(found)
    return files, errors


def read_text_file(path: str | Path) -> str:
    """A labelled file's text: a regular file, strict UTF-8 (BOM allowed); InputError naming the file."""
    path = Path(path)
    try:
        check_regular_file(path)
        data = path.read_bytes()
    except IngestError as err:
        raise InputError(str(err)) from None
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as err:
        offset = skip + err.start
        line = data.count(b"\n", 0, offset) + 1
        raise InputError(f"{path}: not UTF-8 (byte 0x{data[offset]:02x} at offset {offset}, line {line}); "
                         "save it as UTF-8") from None


def _json_rows(path: Path, text: str, errors: list[str]) -> Iterator[tuple[int, dict]]:
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            errors.append(f"{path}:{lineno}: not valid JSON ({err.msg} at column {err.colno})")
            continue
        except RecursionError:
            errors.append(f"{path}:{lineno}: JSON nested too deeply")
            continue
        if not isinstance(obj, dict):
            errors.append(f"{path}:{lineno}: expected a JSON object, got {describe(obj)}")
            continue
        yield lineno, obj


def _split_labels(raw: str) -> list[str]:
    return [part.strip() for part in raw.replace("|", ";").split(";") if part.strip()]


def _labels_of(value: Any, where: str, errors: list[str]) -> list[str] | None:
    if isinstance(value, str):  # tolerate "a;b" in JSON as in CSV
        return _split_labels(value)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        got = describe(value) if not isinstance(value, list) else \
            "a list holding " + ", ".join(sorted({describe(v) for v in value if not isinstance(v, str)}))
        errors.append(f"{where}: 'labels' must be a list of label ids (may be empty), got {got}")
        return None
    return [v.strip() for v in value]


def parse_file(path: str | Path) -> tuple[list[Incoming], list[str]]:
    """Rows of a JSON Lines or CSV file, and the format errors found (file:line: reason).

    A file that cannot be read at all (missing, not a regular file, not UTF-8) raises InputError naming it.
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return _parse_csv(path)
    rows: list[Incoming] = []
    errors: list[str] = []
    for lineno, obj in _json_rows(path, read_text_file(path), errors):
        where = f"{path}:{lineno}"
        if "paragraphs" in obj:  # a whole document with paragraph labels
            doc_id = _string_field(obj, "doc_id", where, errors, " (a document row needs 'doc_id' and a list 'paragraphs')")
            paragraphs = obj.get("paragraphs")
            if not isinstance(paragraphs, list):
                errors.append(f"{where}: 'paragraphs' must be a list, got {describe(paragraphs)}")
                continue
            if doc_id is None:
                continue
            for i, para in enumerate(paragraphs):
                if not isinstance(para, dict):
                    errors.append(f"{where}: paragraph {i} must be an object, got {describe(para)}")
                    continue
                labels = _labels_of(para.get("labels"), f"{where} paragraph {i}", errors)
                text = _string_field(para, "text", f"{where} paragraph {i}", errors)
                if text is None:
                    continue
                if labels is not None:
                    rows.append(Incoming(where, str(para.get("id") or f"{doc_id}#{i}"), text, labels, doc_id,
                                         str(obj.get("source") or path.stem)))
            continue
        row_id = _string_field(obj, "id", where, errors)
        if row_id is None:
            continue
        labels = _labels_of(obj.get("labels"), where, errors)
        if labels is None:
            continue
        if obj.get("correction"):
            rows.append(Incoming(where, row_id, "", labels, correction=True))
            continue
        text = _string_field(obj, "text", where, errors, f" for id {row_id!r}")
        if text is None:
            continue
        rows.append(Incoming(where, row_id, text, labels, str(obj.get("doc_id") or row_id.split("#")[0]),
                             str(obj.get("source") or path.stem)))
    return rows, errors


def _parse_csv(path: Path) -> tuple[list[Incoming], list[str]]:
    rows: list[Incoming] = []
    errors: list[str] = []
    with io.StringIO(read_text_file(path), newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"id", "text", "labels"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(f"{path}:1: CSV needs columns id,text,labels (missing {sorted(missing)})")
        for record in reader:
            where = f"{path}:{reader.line_num}"
            row_id, text = (record.get("id") or "").strip(), record.get("text") or ""
            if not row_id or not text.strip():
                errors.append(f"{where}: missing id or text")
                continue
            correction = (record.get("correction") or "").strip().lower() in ("1", "true", "yes")
            rows.append(Incoming(where, row_id, text, _split_labels(record.get("labels") or ""),
                                 (record.get("doc_id") or row_id.split("#")[0]).strip(),
                                 (record.get("source") or path.stem).strip(), correction))
    return rows, errors


# -- the store ----------------------------------------------------------------
