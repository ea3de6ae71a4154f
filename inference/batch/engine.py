"""The batch run: read the inputs, tag what is not done yet, write the output in input order.

Why it is built this way:
- Never fatal for one document: unreadable inputs (IngestError), documents that
  fail to segment or analyse become error records, are reported on stderr and
  counted; the rest come through.
- Resumable and atomic: finished records go to the part-file (partfile.py) as
  they come; the output is rendered from it in input order (writers.py) and the
  part-file is removed only after that.
- Fast: documents are tagged in chunks of ~`chunk_paragraphs` paragraphs, so the
  predictor's length-sorted batching works across documents.
- Engines: (key, Document) in, (key, record or error message) out, in order;
  "local" runs in this process, "ray" hands off to inference.ray_engine, which is
  imported only inside `_engine` so the dependency stays one-way.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from inference.batch.chunk import Result, analyze_chunk
from inference.batch.partfile import (
    PART_SUFFIX,
    Log,
    PartFile,
    Record,
    document_key,
    error_record,
    seed_from_output,
)
from inference.batch.writers import FORMATS, write_output
from policylens.document import Document
from policylens.paths import TAGGER_DIR
from policylens.tagger.model_dir import TaggerMeta, model_version, resolve_model_dir

ENGINES = ("local", "ray")

Engine = Callable[[Iterator[tuple[str, Document]]], Iterator[Result]]


@dataclass
class BatchConfig:
    """One batch run; validated up front so a bad option fails before any work."""

    model_dir: Path = TAGGER_DIR
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
    """What a run did, for the one-line summary on stderr and the CLI's exit code."""

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


# ----------------------------------------------------------------------------
# engines: (key, Document) in, (key, record or error message) out, in order
# ----------------------------------------------------------------------------


def local_engine(items: Iterable[tuple[str, Document]], predictor: Any, config: BatchConfig) -> Iterator[Result]:
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


def _engine(config: BatchConfig, model_dir: Path, predictor: Any) -> Engine:
    """The engine to run; the model is loaded lazily, only when there is a first document to tag."""
    if config.engine == "ray":
        # the one place batch reaches ray_engine, which needs the `scale` extra (ray[data])
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


# ----------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------


def _log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _open_part(config: BatchConfig, log: Log) -> tuple[PartFile, tempfile.TemporaryDirectory | None]:
    """The part-file beside --out (kept only with --resume), or scratch space in a temp dir for stdout."""
    tmp_dir = None
    if config.part_path is not None:
        part_path = config.part_path
        if not config.resume and part_path.exists():
            log(f"discarding partial results in {part_path} (pass --resume to keep them)")
            part_path.unlink()
    else:  # stdout: the part-file is only scratch space
        tmp_dir = tempfile.TemporaryDirectory(prefix="policylens-tag-")
        part_path = Path(tmp_dir.name) / "out.part"
    part = PartFile(part_path)
    if config.resume and part.index:
        log(f"resume: {len(part.index)} documents found in {part_path}")
    if config.resume and config.fmt == "jsonl" and config.out is not None and config.out.exists():
        seed_from_output(part, config.out, log)
    return part, tmp_dir


class _Run:
    """State shared by the input walk and the result loop: input order, failures, progress, counts."""

    def __init__(self, part: PartFile, settings: str, report: BatchReport, bar: Any) -> None:
        self.part = part
        self.settings = settings
        self.report = report
        self.bar = bar
        self.order: list[tuple[str, Any]] = []  # ("doc", key) or ("error", record), input order
        self.failed: dict[str, Record] = {}
        self.sources: dict[str, Document] = {}

    def error(self, record: Record) -> None:
        self.report.errors.append(record)
        self.bar.write(f"skipped {record.get('source') or record.get('id')}: {record['error']}", file=sys.stderr)

    def pending(self, inputs: Sequence[str], config: BatchConfig, stdin: IO[bytes] | None) -> Iterator[tuple[str, Document]]:
        """The documents still to tag, in input order; records every input (and unreadable ones) in `order`."""
        from policylens.ingest import IngestError, iter_inputs

        for item in iter_inputs(inputs, text_field=config.text_field, id_field=config.id_field, stdin=stdin):
            if isinstance(item, IngestError):
                record = error_record(item.location, item.reason)
                self.order.append(("error", record))
                self.error(record)
                continue
            key = document_key(item, self.settings)
            self.order.append(("doc", key))
            if key in self.part:
                self.report.resumed += 1
                self.bar.update(1)
                continue
            self.sources[key] = item
            yield key, item

    def collect(self, results: Iterable[Result]) -> None:
        """Append each finished record to the part-file at once; failures become error records."""
        report = self.report
        for key, result in results:
            document = self.sources.pop(key)
            if isinstance(result, str):
                record = error_record(document.source, result, document.id)
                self.failed[key] = record
                self.error(record)
            else:
                self.part.append([result])
                report.tagged += 1
                report.paragraphs += len(result["paragraphs"])
            self.bar.update(1)
            self.bar.set_postfix(paragraphs=report.paragraphs, errors=len(report.errors), refresh=False)

    def documents(self) -> int:
        return sum(1 for kind, key in self.order if kind == "doc" and key not in self.failed)

    def records(self) -> Iterator[Record]:
        """Every record, documents and errors, in input order (documents read back from the part-file)."""
        for kind, value in self.order:
            if kind == "error":
                yield value
            elif value in self.failed:
                yield self.failed[value]
            else:
                yield self.part.read(value)


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

    log = log or _log_to_stderr
    started = time.time()
    model_dir = resolve_model_dir(config.model_dir)
    version = model_version(model_dir, TaggerMeta.load(model_dir))
    report = BatchReport(out=config.out)
    part, tmp_dir = _open_part(config, log)
    bar = tqdm(desc="tag", unit="doc", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    run = _Run(part, config.settings_tag(version), report, bar)
    try:
        engine = _engine(config, model_dir, predictor)
        run.collect(engine(run.pending(inputs, config, stdin)))
        bar.close()
        report.documents = run.documents()
        write_output(run.records(), config.fmt, config.out, version, stdout or sys.stdout)
    finally:
        bar.close()
        part.close()
        if tmp_dir is not None:
            tmp_dir.cleanup()
        elif not part.index and part.path.exists() and part.path.stat().st_size == 0:
            part.path.unlink(missing_ok=True)  # a run that failed before its first record leaves no empty .part
    if config.out is not None:
        part.path.unlink(missing_ok=True)  # merged: the output now holds everything
    report.seconds = time.time() - started
    return report
