"""One batched model pass over a chunk of documents, shared by the local and the Ray engine.

Why its own module: inference.ray_engine runs this same function inside its
actors, and the batch engine hands off to ray_engine. Keeping it here makes the
dependency one-way: engine -> ray_engine -> chunk, and chunk imports neither.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from inference.batch.partfile import Record
from policylens.document import Document

Result = tuple[str, "Record | str"]  # (key, record) or (key, error message)


def _record(analysis: Any, key: str) -> Record:
    return {"key": key, **analysis.to_dict()}


def _prepare_summaries(predictor: Any, documents: Sequence[Document]) -> None:
    """Let the summariser encode the sentences of the whole chunk in one batched pass (it caches them),
    so the per-document summaries that follow only look embeddings up."""
    prepare = getattr(getattr(predictor, "summarizer", None), "prepare", None)
    if prepare is None:
        return
    try:
        prepare(documents)
    except Exception:  # noqa: BLE001 - each document's own summary then reports what went wrong
        pass


def analyze_chunk(predictor: Any, chunk: Sequence[tuple[str, Document]], summary: bool) -> list[Result]:
    """One batched pass; if it fails, document by document so one bad document costs only itself."""
    if summary:
        _prepare_summaries(predictor, [d for _, d in chunk])
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
