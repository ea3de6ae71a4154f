"""Batch tagging: many documents in, one JSON Lines / CSV / Markdown / HTML file out.

Why it is built this way:
- Resumable: every finished document is appended (flushed at once, fsynced every
  few seconds) to a sidecar part-file `<out>.part` as one JSON line, keyed by a content hash of the
  document (id + text) and the model version + run settings. An interrupted run
  loses at most the chunk in flight; `--resume` reuses every record whose key
  matches, so only new or changed documents are tagged again. A finished
  JSON Lines output doubles as the record store for later resumes.
- Never fatal for one document: unreadable inputs (IngestError), documents that
  fail to segment or analyse become error records, are reported on stderr and
  counted; the rest come through.
- Atomic: the final file is rendered from the part-file in input order into a
  temp file and renamed; the part-file is removed only after that.
- Fast: documents are tagged in chunks of ~`chunk_paragraphs` paragraphs, so the
  predictor's length-sorted batching works across documents.
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from policylens.document import Document
from policylens.io import atomic_write
from policylens.tagger.model_dir import TaggerMeta, resolve_model_dir

FORMATS = ("jsonl", "csv", "md", "html")
ENGINES = ("local", "ray")
DEFAULT_MODEL_DIR = Path("models/taggers/default")
PART_SUFFIX = ".part"

Record = dict[str, Any]
Log = Callable[[str], None]


@dataclass
class BatchConfig:
    """One batch run; validated up front so a bad option fails before any work."""

    model_dir: Path = DEFAULT_MODEL_DIR
    backend: str | None = None  # None: the model's policylens.json setting, else torch
    fmt: str = "jsonl"
    out: Path | None = None  # None: stdout (no resume)
    summary: bool = True
    resume: bool = False
    engine: str = "local"
    chunk_paragraphs: int = 256  # paragraphs tagged (and checkpointed) together
    batch_size: int = 8
    num_threads: int | None = None
    text_field: str = "text"
    id_field: str = "doc_id"
    workers: int = 1  # Ray actors (engine="ray")

    def __post_init__(self) -> None:
        self.model_dir = Path(self.model_dir)
        self.out = Path(self.out) if self.out is not None else None
        if self.fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {self.fmt!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.backend not in (None, "torch", "onnx"):
            raise ValueError(f"backend must be torch or onnx, got {self.backend!r}")
        if self.resume and self.out is None:
            raise ValueError("--resume needs --out FILE (there is nothing to resume on stdout)")
        if self.chunk_paragraphs < 1 or self.batch_size < 1 or self.workers < 1:
            raise ValueError("chunk_paragraphs, batch_size and workers must be >= 1")

    @property
    def part_path(self) -> Path | None:
        return self.out.with_name(self.out.name + PART_SUFFIX) if self.out else None

    def settings_tag(self, version: str) -> str:
        """What, besides the text, decides a record: a record made under other settings is not reused."""
        return f"{version}|{self.backend or 'default'}|summary={int(self.summary)}"


@dataclass
class BatchReport:
    documents: int = 0  # documents in the output (tagged now + resumed)
    tagged: int = 0  # documents tagged in this run
    resumed: int = 0  # documents taken from an earlier run's records
    paragraphs: int = 0  # paragraphs tagged in this run
    errors: list[Record] = field(default_factory=list)
    seconds: float = 0.0
    out: Path | None = None

    @property
    def paragraphs_per_second(self) -> float:
        return self.paragraphs / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (f"{self.documents} documents ({self.tagged} tagged, {self.resumed} resumed), "
                f"{self.paragraphs} paragraphs in {self.seconds:.1f} s "
                f"({self.paragraphs_per_second:.1f} paragraphs/s), {len(self.errors)} errors"
                + (f" -> {self.out}" if self.out else ""))


def document_key(document: Document, settings: str) -> str:
    """Content hash of the document (id and text) and the model version + run settings."""
    digest = hashlib.sha256()
    for part in (settings, document.id, document.text):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


def error_record(source: str | None, message: str, doc_id: str | None = None) -> Record:
    return {"error": message, "source": source, "id": doc_id}


# ----------------------------------------------------------------------------
# the part-file: append-only record store
# ----------------------------------------------------------------------------


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


def _seed_from_output(part: PartFile, out: Path, log: Log) -> None:
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


# ----------------------------------------------------------------------------
# engines: (key, Document) in, (key, record or error message) out, in order
# ----------------------------------------------------------------------------

Result = tuple[str, "Record | str"]


def _record(analysis, key: str) -> Record:
    return {"key": key, **analysis.to_dict()}


def local_engine(items: Iterable[tuple[str, Document]], predictor, config: BatchConfig) -> Iterator[Result]:
    """Tag in chunks of ~chunk_paragraphs paragraphs (one batched model pass per chunk)."""
    from policylens.segment import segment

    chunk: list[tuple[str, Document]] = []
    size = 0
    for key, document in items:
        try:
            paragraphs = segment(document, predictor.segment_config)
        except Exception as err:
            yield key, f"segmentation failed: {type(err).__name__}: {err}"
            continue
        chunk.append((key, document))
        size += max(1, len(paragraphs))
        if size >= config.chunk_paragraphs:
            yield from analyze_chunk(predictor, chunk, config.summary)
            chunk, size = [], 0
    if chunk:
        yield from analyze_chunk(predictor, chunk, config.summary)


def analyze_chunk(predictor, chunk: Sequence[tuple[str, Document]], summary: bool) -> list[Result]:
    """One batched pass; if it fails, document by document so one bad document costs only itself."""
    try:
        analyses = predictor.analyze([d for _, d in chunk], summary=summary)
        return [(key, _record(a, key)) for (key, _), a in zip(chunk, analyses)]
    except Exception:
        if len(chunk) == 1:
            key, _ = chunk[0]
            err = sys.exc_info()[1]
            return [(key, f"analysis failed: {type(err).__name__}: {err}")]
    results: list[Result] = []
    for item in chunk:
        results.extend(analyze_chunk(predictor, [item], summary))
    return results


# ----------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------


def run_batch(
    inputs: Sequence[str],
    config: BatchConfig,
    *,
    stdin: IO[bytes] | None = None,
    stdout: IO[str] | None = None,
    progress: bool = True,
    log: Log | None = None,
    predictor: Any = None,
) -> BatchReport:
    """Tag every document of `inputs` and write `config.out` (or stdout) in `config.fmt`.

    `predictor` may be passed in (tests, long-lived callers); otherwise one is
    loaded only if some document actually needs tagging.
    """
    from tqdm.auto import tqdm

    from policylens.ingest import IngestError, iter_inputs

    log = log or (lambda message: print(message, file=sys.stderr))
    started = time.time()
    model_dir = resolve_model_dir(config.model_dir)
    meta = TaggerMeta.load(model_dir)
    from policylens.tagger.model_dir import model_version

    version = model_version(model_dir, meta)
    settings = config.settings_tag(version)
    report = BatchReport(out=config.out)

    tmp_dir = None
    if config.part_path is not None:
        part_path = config.part_path
        if not config.resume and part_path.exists():
            log(f"discarding partial results in {part_path} (pass --resume to keep them)")
            part_path.unlink()
    else:  # stdout: the part-file is only scratch space
        import tempfile

        tmp_dir = tempfile.TemporaryDirectory(prefix="policylens-tag-")
        part_path = Path(tmp_dir.name) / "out.part"
    part = PartFile(part_path)
    if config.resume and part.index:
        log(f"resume: {len(part.index)} documents found in {part_path}")
    if config.resume and config.fmt == "jsonl" and config.out is not None and config.out.exists():
        _seed_from_output(part, config.out, log)

    order: list[tuple[str, Any]] = []  # ("doc", key) or ("error", record), input order
    failed: dict[str, Record] = {}
    bar = tqdm(desc="tag", unit="doc", file=sys.stderr, disable=not progress, dynamic_ncols=True)

    def error(record: Record) -> None:
        report.errors.append(record)
        bar.write(f"skipped {record.get('source') or record.get('id')}: {record['error']}", file=sys.stderr)

    sources: dict[str, Document] = {}

    def pending() -> Iterator[tuple[str, Document]]:
        for item in iter_inputs(inputs, text_field=config.text_field, id_field=config.id_field, stdin=stdin):
            if isinstance(item, IngestError):
                record = error_record(item.location, item.reason)
                order.append(("error", record))
                error(record)
                continue
            key = document_key(item, settings)
            order.append(("doc", key))
            if key in part:
                report.resumed += 1
                bar.update(1)
                continue
            sources[key] = item
            yield key, item

    try:
        engine = _engine(config, model_dir, predictor)
        for key, result in engine(pending()):
            document = sources.pop(key)
            if isinstance(result, str):
                record = error_record(document.source, result, document.id)
                failed[key] = record
                error(record)
            else:
                part.append([result])
                report.tagged += 1
                report.paragraphs += len(result["paragraphs"])
            bar.update(1)
            bar.set_postfix(paragraphs=report.paragraphs, errors=len(report.errors), refresh=False)
        bar.close()
        report.documents = sum(1 for kind, key in order if kind == "doc" and key not in failed)
        _write_output(config, part, order, failed, version, stdout or sys.stdout)
    finally:
        bar.close()
        part.close()
        if tmp_dir is not None:
            tmp_dir.cleanup()
    if config.out is not None:
        part_path.unlink(missing_ok=True)  # merged: the output now holds everything
    report.seconds = time.time() - started
    return report


def _engine(config: BatchConfig, model_dir: Path, predictor: Any) -> Callable[[Iterator[tuple[str, Document]]], Iterator[Result]]:
    """The engine to run; the model is loaded lazily, only when there is a first document to tag."""
    if config.engine == "ray":
        from inference.ray_engine import ray_engine

        return lambda items: ray_engine(items, model_dir, config)

    def run(items: Iterator[tuple[str, Document]]) -> Iterator[Result]:
        first = next(items, None)
        if first is None:
            return
        loaded = predictor
        if loaded is None:
            from inference.predictor import Predictor

            loaded = Predictor(
                model_dir, backend=config.backend, batch_size=config.batch_size, num_threads=config.num_threads,
                summarizer="auto" if config.summary else None,
            )

        def chained() -> Iterator[tuple[str, Document]]:
            yield first
            yield from items

        yield from local_engine(chained(), loaded, config)

    return run


def _records_in_order(part: PartFile, order: list[tuple[str, Any]], failed: dict[str, Record]) -> Iterator[Record]:
    for kind, value in order:
        if kind == "error":
            yield value
        elif value in failed:
            yield failed[value]
        else:
            yield part.read(value)


def _write_output(config: BatchConfig, part: PartFile, order, failed, version: str, stdout: IO[str]) -> None:
    records = _records_in_order(part, order, failed)
    writer = WRITERS[config.fmt]
    if config.out is None:
        writer(records, stdout, version)
        stdout.flush()
        return
    newline = "" if config.fmt == "csv" else None
    with atomic_write(config.out) as handle:
        if newline == "":
            handle.reconfigure(newline="")
        writer(records, handle, version)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(config.out, 0o666 & ~umask)  # the temp file was private (mkstemp); the report is not


# ----------------------------------------------------------------------------
# writers: records (documents and errors, in input order) -> a file
# ----------------------------------------------------------------------------


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
