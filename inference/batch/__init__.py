"""Batch tagging: many documents in, one JSON Lines / CSV / Markdown / HTML file out.

Why a package: the run (engine.py), the resumable record store (partfile.py),
the output formats (writers.py) and the chunk pass shared with the Ray engine
(chunk.py) change for different reasons. This module only re-exports what other
code imports from `inference.batch`, so callers need not know the split.
"""

from __future__ import annotations

from inference.batch.chunk import Result, analyze_chunk
from inference.batch.engine import (
    ENGINES,
    BatchConfig,
    BatchReport,
    local_engine,
    run_batch,
)
from inference.batch.partfile import (
    PART_SUFFIX,
    PartFile,
    Record,
    document_key,
    error_record,
    seed_from_output,
)
from inference.batch.writers import (
    FORMATS,
    WRITERS,
    write_csv,
    write_html,
    write_jsonl,
    write_markdown,
    write_output,
)

__all__ = [
    "ENGINES",
    "FORMATS",
    "PART_SUFFIX",
    "WRITERS",
    "BatchConfig",
    "BatchReport",
    "PartFile",
    "Record",
    "Result",
    "analyze_chunk",
    "document_key",
    "error_record",
    "local_engine",
    "run_batch",
    "seed_from_output",
    "write_csv",
    "write_html",
    "write_jsonl",
    "write_markdown",
    "write_output",
]
