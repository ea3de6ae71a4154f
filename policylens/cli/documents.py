"""`policylens segment` and `policylens export`: documents in, paragraphs or text files out."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from policylens.cli._util import console, err_console, fail


def _paragraph_table(document, known: dict[str, list[str]]) -> Table:
    view = Table(title=f"{document.id}  {document.title or ''}", expand=True)
    view.add_column("id", no_wrap=True)
    view.add_column("kind")
    view.add_column("labels")
    view.add_column("text", ratio=1, no_wrap=True, overflow="ellipsis")
    for paragraph in document.paragraphs:
        labels = known.get(paragraph.text)
        shown = "?" if labels is None else (", ".join(labels) or "-")
        view.add_row(paragraph.id, paragraph.kind, shown, paragraph.text[:60])
    return view


def segment(
    inputs: list[str] = typer.Argument(..., help="Files, folders, globs, JSON Lines corpora, or - for stdin."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write paragraphs as JSON Lines here."),
    table: bool = typer.Option(False, "--table", help="Print a table of paragraphs (with seed labels when known)."),
    max_chars: int = typer.Option(400, help="Cut longer paragraphs at sentence ends."),
    text_field: str = typer.Option("text", help="Text field of JSON Lines inputs."),
) -> None:
    """Read documents and split them into labelled-ready paragraphs.

    Unreadable inputs (undecodable, empty or blank after normalisation, symlink loops, FIFOs and other
    non-regular files) are skipped with a reason; the exit status is 1 when no paragraph came out.
    """
    from policylens.ingest import IngestError, iter_inputs
    from policylens.io import atomic_write, read_jsonl
    from policylens.paths import SEED_ANNOTATIONS_PATH
    from policylens.segment import SegmentConfig
    from policylens.segment import segment as segment_document

    config = SegmentConfig(max_chars=max_chars)
    known: dict[str, list[str]] = {}
    if table and SEED_ANNOTATIONS_PATH.exists():
        known = {row["text"]: row["labels"] for _, row in read_jsonl(SEED_ANNOTATIONS_PATH)}

    n_docs = n_paragraphs = n_errors = 0
    with ExitStack() as stack:
        handle = stack.enter_context(atomic_write(out)) if out else None
        for item in iter_inputs(inputs, text_field=text_field):
            if isinstance(item, IngestError):
                n_errors += 1
                err_console.print(f"[yellow]skipped[/yellow] {item}")
                continue
            paragraphs = segment_document(item, config)
            n_docs += 1
            n_paragraphs += len(paragraphs)
            if handle:
                for paragraph in paragraphs:
                    handle.write(json.dumps(paragraph.to_dict(), ensure_ascii=False) + "\n")
            if table:
                console.print(_paragraph_table(item, known))
    console.print(f"{n_docs} documents, {n_paragraphs} paragraphs, {n_errors} skipped")
    if n_docs == 0 or n_paragraphs == 0:
        if n_docs:
            err_console.print("[red]error:[/red] no document produced a paragraph")
        raise typer.Exit(1)


def export(
    corpus: Path = typer.Argument(..., help="JSON Lines corpus (doc_id, text, optional title/source/date)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write one UTF-8 .txt file per document into."),
    source: Optional[list[str]] = typer.Option(None, "--source", help="Keep only rows with this `source` (repeatable)."),
    limit: int = typer.Option(5, help="Documents per source (or in all, without --source)."),
) -> None:
    """Write documents of a JSON Lines corpus as a folder of text files (e.g. an inbox for `tag`)."""
    from policylens.ingest import check_regular_file
    from policylens.io import InputError, atomic_write, read_jsonl

    counts: dict[str, int] = {}
    try:
        if corpus.exists() or corpus.is_symlink():
            check_regular_file(corpus)  # a folder, FIFO or symlink loop: say so instead of hanging or a traceback
        for lineno, row in read_jsonl(corpus):
            key = str(row.get("source")) if source else "*"
            if (source and key not in source) or counts.get(key, 0) >= limit or not row.get("text"):
                continue
            counts[key] = counts.get(key, 0) + 1
            name = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(row.get("doc_id") or lineno))
            with atomic_write(out / f"{name}.txt") as handle:
                handle.write(row["text"])
    except InputError as err:
        fail(str(err))
    except UnicodeDecodeError as err:  # read_jsonl decodes as it goes: name the file here
        fail(f"{corpus}: not UTF-8 (byte 0x{err.object[err.start]:02x}); JSON Lines must be UTF-8")
    console.print(f"wrote {sum(counts.values())} documents to {out}")


def register(app: typer.Typer) -> None:
    app.command("segment")(segment)
    app.command("export")(export)
