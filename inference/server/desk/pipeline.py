"""The desk's document pipeline: the steps of `policylens tag`, cut so progress can be shown.

`policylens tag` reads a file (policylens.ingest), segments it, tags every paragraph and
aggregates and summarises the document (Predictor.analyze). Here the same steps run with
the served model, except that the paragraphs are scored in chunks (each chunk one call on
the server's inference thread), so a 200-page PDF reports its progress and API requests
run between its chunks. The record is the one `policylens tag --format jsonl` writes.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from inference.analysis import SummaryView, TaggedParagraph, build_analysis
from policylens.document import Document, Paragraph
from policylens.ingest import IngestError, iter_file
from policylens.segment import segment

# Runs a function on the server's inference thread and returns its result (ModelService.call, bridged).
ModelCall = Callable[[Callable[[], Any]], Any]
_UNSAFE = re.compile(r"[^\w.\-]+", re.UNICODE)


def safe_name(name: str) -> str:
    """A file name without folders or odd characters, its suffix kept (what ingest dispatches on)."""
    base = Path(name.replace("\\", "/")).name.strip()
    cleaned = _UNSAFE.sub("_", base).strip("._") or "upload"
    stem, dot, suffix = cleaned.rpartition(".")
    return (stem[:80] + dot + suffix[:10]) if dot else cleaned[:80]


def read_upload(name: str, data: bytes, max_documents: int) -> tuple[list[Document], list[str]]:
    """The documents of one uploaded file, read as `policylens tag` reads that file; problems as messages.

    The bytes go to a private temp file named like the upload (the suffix picks the reader);
    each document's `source` is the uploaded name.
    """
    documents: list[Document] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="policylens-desk-") as tmp:
        path = Path(tmp) / safe_name(name)
        path.write_bytes(data)
        for item in iter_file(path):
            if isinstance(item, IngestError):
                problems.append(f"{name}: {item.reason}")
                continue
            if len(documents) == max_documents:
                problems.append(f"{name}: more than {max_documents} documents; only the first {max_documents} "
                                "were read (split the file)")
                break
            item.source = name
            documents.append(item)
    return documents, problems


def paste_name(text: str, title: str | None) -> str:
    """A file name for pasted text: its title (or `paste`) and a hash, so two pastes are two documents."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    stem = safe_name(title or "")[:40] if title and title.strip() else "paste"
    return f"{stem}-{digest}.txt"


def summarize(predictor: Any, document: Document, paragraph_labels: Mapping[str, Sequence[str]],
              domain: str | None = None) -> tuple[SummaryView | None, str | None]:
    """The summary Predictor.analyze makes (optionally of one domain), or why there is none."""
    summarizer = getattr(predictor, "summarizer", None)
    if summarizer is None:
        return None, "no summariser is loaded"
    try:
        result = summarizer.summarize(document, paragraph_labels={k: list(v) for k, v in paragraph_labels.items()},
                                      max_chars=getattr(predictor, "summary_chars", None), domain=domain)
    except Exception as err:  # noqa: BLE001 - a summary that fails must not lose the tags
        return None, f"summariser failed: {type(err).__name__}: {err}"
    return SummaryView.from_summary(result, document), None


def analyze(
    document: Document,
    predictor: Any,
    call: ModelCall,
    *,
    chunk: int = 64,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> dict[str, Any]:
    """Segment, tag in chunks of `chunk` paragraphs, aggregate and summarise one document with `predictor`.

    Every chunk runs through `call` (the inference thread) on this one predictor, so a model
    swapped in meanwhile never scores half a document. Returns DocumentAnalysis.to_dict().
    """
    paragraphs = segment(document, getattr(predictor, "segment_config", None))
    texts = [p.text for p in paragraphs]
    progress(0, len(texts))
    tags: list[Any] = []
    for start in range(0, len(texts), chunk):
        part = texts[start:start + chunk]
        tags.extend(call(lambda part=part: predictor.predict(part)))
        progress(len(tags), len(texts))
    tagged = [TaggedParagraph(paragraph=p, scores=dict(t.scores), labels=tuple(t.labels))
              for p, t in zip(paragraphs, tags)]
    view, error = call(lambda: summarize(predictor, document, {t.paragraph.id: t.labels for t in tagged}))
    analysis = build_analysis(document, tagged, predictor.labels, summary=view, summary_error=error,
                              model_version=predictor.version, config=getattr(predictor, "aggregate", None))
    return analysis.to_dict()


def document_of(record: Mapping[str, Any], text: str) -> Document:
    """The Document a record was made from (its text kept by the inbox), paragraphs included."""
    fields = ("id", "doc_id", "index", "text", "original", "start", "end", "kind", "speaker")
    paragraphs = [Paragraph(**{f: p.get(f) for f in fields}, headings=tuple(p.get("headings") or ()))
                  for p in record["paragraphs"]]
    return Document(id=record["id"], text=text, source=record.get("source"), title=record.get("title"),
                    meta=dict(record.get("meta") or {}), paragraphs=paragraphs)
