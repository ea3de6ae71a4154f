"""Writers: records (documents and errors, in input order) -> one JSON Lines / CSV / Markdown / HTML file.

Why separate from the run: a writer only sees finished records in input order
(streamed from the part-file), so every format renders the same documents and
errors, and `write_output` makes the file appear atomically, never half written.
"""

from __future__ import annotations

import csv
import html
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from inference.batch.partfile import Record
from policylens.io import atomic_write


def write_jsonl(records: Iterable[Record], handle: IO[str], version: str) -> None:
    """One document per line (paragraphs nested); errors as {"error", "source", "id"} lines."""
    for record in records:
        handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")


def write_csv(records: Iterable[Record], handle: IO[str], version: str) -> None:
    """One paragraph per row, scores as score_<label> columns; errors are on stderr and in the count."""
    writer = None
    for record in records:
        if "error" in record:
            continue
        labels = list(record["domains"])
        if writer is None:
            writer = csv.writer(handle)
            writer.writerow(["doc_id", "title", "paragraph_id", "index", "kind", "start", "end", "headings",
                             "speaker", "labels", *[f"score_{label}" for label in labels], "text"])
        for p in record["paragraphs"]:
            writer.writerow([record["id"], record.get("title") or "", p["id"], p["index"], p["kind"], p["start"],
                             p["end"], " > ".join(p["headings"]), p.get("speaker") or "", ";".join(p["labels"]),
                             *[p["scores"].get(label, "") for label in labels], p["text"]])
    if writer is None:
        csv.writer(handle).writerow(["doc_id", "title", "paragraph_id", "index", "kind", "start", "end",
                                     "headings", "speaker", "labels", "text"])


def _domain_line(record: Record) -> str:
    """The Markdown domains line: share of text and paragraph count per assigned label."""
    parts = []
    for label in record["labels"]:
        stat = record["domains"][label]
        parts.append(f"{label} {stat['char_share']:.0%} ({stat['paragraphs']} paragraphs)")
    return ", ".join(parts) or "none"


def write_markdown(records: Iterable[Record], handle: IO[str], version: str) -> None:
    """A readable report: per document title, domains with shares, summary, tagged paragraphs."""
    handle.write(f"# policylens report\n\nModel version `{version}`.\n\n")
    errors = []
    for record in records:
        if "error" in record:
            errors.append(record)
            continue
        handle.write(f"## {record.get('title') or record['id']}\n\n")
        handle.write(f"- id: `{record['id']}`\n- source: {record.get('source') or '-'}\n")
        handle.write(f"- domains: {_domain_line(record)}\n\n")
        summary = record.get("summary")
        if summary and summary.get("text"):
            handle.write(f"**Summary.** {summary['text']}\n\n")
        elif record.get("summary_error"):
            handle.write(f"_No summary: {record['summary_error']}_\n\n")
        for p in record["paragraphs"]:
            text = p["text"].replace("\n", " ")
            if p["kind"] in ("title", "heading"):
                handle.write(f"**{text}**\n\n")
                continue
            tags = ", ".join(f"{label} {p['scores'][label]:.2f}" for label in p["labels"]) or "-"
            handle.write(f"- `#{p['index']}` [{tags}] {text}\n")
        handle.write("\n")
    if errors:
        handle.write(f"## Errors ({len(errors)})\n\n")
        for record in errors:
            handle.write(f"- {record.get('source') or record.get('id')}: {record['error']}\n")


# The HTML report is one self-contained page: no external stylesheet to lose.
_CSS = """body{font-family:system-ui,"Noto Sans CJK SC",sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
section{border-top:1px solid #ccc;margin-top:2rem}.tag{display:inline-block;background:#e8f0fe;border-radius:.3rem;
padding:0 .35rem;margin-right:.25rem;font-size:.8rem}.meta{color:#666;font-size:.9rem}.p{margin:.35rem 0}
.h{font-weight:bold;margin-top:.8rem}.summary{background:#f6f6f6;padding:.5rem 1rem}table{border-collapse:collapse}
td,th{padding:.1rem .6rem;text-align:left}.err{color:#a00}"""


def write_html(records: Iterable[Record], handle: IO[str], version: str) -> None:
    """The Markdown report as one self-contained HTML page (everything escaped)."""
    e = html.escape
    handle.write(f"<!doctype html>\n<html lang=\"zh\"><head><meta charset=\"utf-8\"><title>policylens report</title>"
                 f"<style>{_CSS}</style></head><body>\n<h1>policylens report</h1>"
                 f"<p class=\"meta\">model version {e(version)}</p>\n")
    errors = []
    for record in records:
        if "error" in record:
            errors.append(record)
            continue
        handle.write(f"<section id=\"{e(record['id'])}\"><h2>{e(record.get('title') or record['id'])}</h2>\n")
        handle.write(f"<p class=\"meta\">id {e(record['id'])} · {e(str(record.get('source') or '-'))}</p>\n")
        rows = "".join(
            f"<tr><td>{e(label)}</td><td>{record['domains'][label]['char_share']:.0%}</td>"
            f"<td>{record['domains'][label]['paragraphs']}</td></tr>" for label in record["labels"]
        )
        handle.write("<table><tr><th>domain</th><th>share</th><th>paragraphs</th></tr>" + rows + "</table>\n"
                     if rows else "<p>domains: none</p>\n")
        summary = record.get("summary")
        if summary and summary.get("text"):
            handle.write(f"<p class=\"summary\">{e(summary['text'])}</p>\n")
        for p in record["paragraphs"]:
            if p["kind"] in ("title", "heading"):
                handle.write(f"<p class=\"h\">{e(p['text'])}</p>\n")
                continue
            tags = "".join(f"<span class=\"tag\">{e(label)} {p['scores'][label]:.2f}</span>" for label in p["labels"])
            handle.write(f"<p class=\"p\" id=\"{e(p['id'])}\">{tags}{e(p['text'])}</p>\n")
        handle.write("</section>\n")
    if errors:
        handle.write(f"<section><h2>Errors ({len(errors)})</h2><ul>")
        for record in errors:
            handle.write(f"<li class=\"err\">{e(str(record.get('source') or record.get('id')))}: {e(record['error'])}</li>")
        handle.write("</ul></section>\n")
    handle.write("</body></html>\n")


WRITERS: dict[str, Callable[[Iterable[Record], IO[str], str], None]] = {
    "jsonl": write_jsonl, "csv": write_csv, "md": write_markdown, "html": write_html,
}

FORMATS = tuple(WRITERS)  # ("jsonl", "csv", "md", "html")


def write_output(records: Iterable[Record], fmt: str, out: Path | None, version: str, stdout: IO[str]) -> None:
    """Render `records` as `fmt` to stdout, or to `out` through a temp file renamed into place."""
    writer = WRITERS[fmt]
    if out is None:
        writer(records, stdout, version)
        stdout.flush()
        return
    newline = "" if fmt == "csv" else None
    with atomic_write(out) as handle:
        if newline == "":
            handle.reconfigure(newline="")
        writer(records, handle, version)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(out, 0o666 & ~umask)  # the temp file was private (mkstemp); the report is not
