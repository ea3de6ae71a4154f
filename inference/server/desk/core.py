"""The review desk's state and actions; routes.py only turns HTTP into calls of these methods.

One `Desk` per app (app.state.desk): the settings, the inbox, two job runners (tagging
uploads, retraining: each one job at a time) and the optional training backend. It is
started by the app's lifespan once the model is loaded, and reaches the model only
through ModelService: chunks of tagging and summaries run on its inference thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from inference.batch.writers import WRITERS
from inference.server.desk.backend import DeskBackend, DeskError
from inference.server.desk.config import DeskConfig
from inference.server.desk.inbox import Entry, Inbox, entry_key
from inference.server.desk.jobs import Job, JobRunner
from inference.server.desk.pipeline import analyze, document_of, read_upload, summarize
from inference.server.desk.views import (
    current_record,
    domain_ids,
    paragraph_view,
    review_candidates,
)
from policylens.document import Document
from policylens.io import InputError

EXPORT_FORMATS = {"csv": ("text/csv", "csv"), "jsonl": ("application/x-ndjson", "jsonl"), "md": ("text/markdown", "md")}
_SUMMARY_CACHE = 256


class Desk:
    def __init__(self, config: DeskConfig, backend: DeskBackend | None) -> None:
        self.config = config
        self.backend = backend
        self.inbox = Inbox(config.data_dir)
        self.service: Any = None  # inference.server.service.ModelService, set by start()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.tagger: JobRunner | None = None
        self.trainer: JobRunner | None = None
        self._summaries: OrderedDict[tuple, dict] = OrderedDict()

    # -- lifecycle -----------------------------------------------------------

    async def start(self, service: Any) -> None:
        self.service = service
        self._loop = asyncio.get_running_loop()
        self.tagger = JobRunner("tag")
        self.trainer = JobRunner("retrain")

    def stop(self) -> None:
        for runner in (self.tagger, self.trainer):
            if runner is not None:
                runner.close()

    @property
    def read_only(self) -> str | None:
        """Why writes are refused, or None when they are allowed (with the token, if one is set)."""
        if self.config.read_only:
            return self.config.read_only
        if self.backend is None:
            return "this desk has no label store: start it with `policylens serve` to correct and retrain"
        return None

    def served(self) -> Any:
        """The LoadedModel serving now (version, predictor)."""
        return self.service.current

    def call_model(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the server's inference thread from a worker or request thread; wait for it."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(self.service.call(fn), self._loop).result()

    # -- tagging -------------------------------------------------------------

    def submit_upload(self, files: Sequence[tuple[str, bytes]], title: str) -> Job:
        """Read and tag uploaded files in the background; the job's result is the new inbox keys."""
        assert self.tagger is not None

        def work(job: Job) -> list[str]:
            keys: list[str] = []
            for number, (name, data) in enumerate(files, 1):
                job.update(phase=f"file {number} of {len(files)}: reading {name}", done=0, total=None)
                documents, problems = read_upload(name, data, self.config.max_documents)
                for problem in problems:
                    job.note(problem)
                for i, document in enumerate(documents, 1):
                    where = f"file {number} of {len(files)}, document {i} of {len(documents)}"
                    keys.append(self._tag(job, self._unique(document), name, where))
            if not keys:
                raise DeskError(400, "; ".join(job.snapshot()["notes"]) or "no documents in the upload")
            return keys

        return self.tagger.submit("upload", title, work)

    def submit_retag(self, key: str) -> Job:
        """Tag an inbox document again with the model serving now (after a promotion)."""
        entry = self.entry(key)
        assert self.tagger is not None

        def work(job: Job) -> list[str]:
            document = Document(id=entry.record["id"], text=entry.text, source=entry.record.get("source"),
                                title=entry.record.get("title"), meta=dict(entry.record.get("meta") or {}))
            return [self._tag(job, document, entry.filename, "re-tagging", uploaded=entry.uploaded)]

        return self.tagger.submit("retag", entry.title, work)

    def _unique(self, document: Document) -> Document:
        """Another document already in the inbox under this id gets a suffixed id (paragraph ids stay unique)."""
        key = entry_key(document.id, document.text)
        taken = {e.record["id"] for e in self.inbox.entries() if e.key != key}
        if document.id in taken:
            document.id = f"{document.id}~{hashlib.sha256(document.text.encode('utf-8')).hexdigest()[:6]}"
        return document

    def _tag(self, job: Job, document: Document, filename: str, where: str, uploaded: str | None = None) -> str:
        model = self.served()
        predictor = model.predictor
        label = (document.title or document.id)[:40]

        def progress(done: int, total: int) -> None:
            job.update(phase=f"{where}: tagging {label} ({done}/{total} paragraphs)", done=done, total=total)

        record = analyze(document, predictor, self.call_model, chunk=self.config.chunk_paragraphs, progress=progress)
        thresholds = dict(zip(predictor.labels, map(float, predictor.meta.thresholds)))
        entry = Entry(key=entry_key(document.id, document.text), record=record, text=document.text,
                      filename=filename, thresholds=thresholds)
        if uploaded:
            entry.uploaded = uploaded
        self.inbox.put(entry)
        return entry.key

    # -- reading -------------------------------------------------------------

    def entry(self, key: str) -> Entry:
        entry = self.inbox.get(key)
        if entry is None:
            raise DeskError(404, f"no document {key!r} in the inbox")
        return entry

    def states(self, entries: Sequence[Entry]) -> dict[str, dict]:
        """Label states of every paragraph of `entries` (empty without a backend)."""
        if self.backend is None or not entries:
            return {}
        paragraphs = [_store_paragraph(entry, p) for entry in entries for p in entry.record["paragraphs"]]
        return self.backend.label_states(paragraphs)

    def summary(self, key: str, domain: str | None) -> dict[str, Any]:
        """The document's summary (the stored one), or of one domain's paragraphs (current labels)."""
        entry = self.entry(key)
        if domain is None:
            summary = entry.record.get("summary")
            return {"domain": None, "summary": summary, "error": entry.record.get("summary_error")}
        if domain not in domain_ids(entry):
            raise DeskError(400, f"unknown domain {domain!r}; this document's domains are {', '.join(domain_ids(entry))}")
        states = self.states([entry])
        labels = {p["id"]: (states[p["id"]]["labels"] if p["id"] in states else p["labels"])
                  for p in entry.record["paragraphs"]}
        cache_key = (key, domain, json.dumps(labels, sort_keys=True), self.served().version)
        if cache_key not in self._summaries:
            document = document_of(entry.record, entry.text)
            predictor = self.served().predictor
            view, error = self.call_model(lambda: summarize(predictor, document, labels, domain))
            self._summaries[cache_key] = {"domain": domain, "summary": view.to_dict() if view else None, "error": error}
            while len(self._summaries) > _SUMMARY_CACHE:
                self._summaries.popitem(last=False)
        return self._summaries[cache_key]

    def export(self, keys: Sequence[str], fmt: str, domain: str | None, whole: bool) -> tuple[str, str, str]:
        """(body, media type, file suffix) of the documents `keys` with current labels, like `policylens tag --format`.

        whole=False (a document view filtered by `domain`): only the paragraphs that carry it;
        whole=True (the inbox filtered by `domain`): whole documents.
        """
        if fmt not in EXPORT_FORMATS:
            raise DeskError(400, f"format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
        entries = [self.entry(key) for key in keys]
        states = self.states(entries)
        records = [current_record(entry, states, None if whole else domain) for entry in entries]
        versions = ", ".join(sorted({r.get("model_version") or "" for r in records})) or self.served().version
        out = io.StringIO(newline="" if fmt == "csv" else None)
        WRITERS[fmt](records, out, versions)
        media, suffix = EXPORT_FORMATS[fmt]
        return out.getvalue(), media, suffix

    # -- writing (the routes check the token first) --------------------------

    def _backend(self) -> DeskBackend:
        if self.backend is None:
            raise DeskError(403, self.read_only or "read-only")
        return self.backend

    def _paragraph(self, key: str, index: int) -> tuple[Entry, dict]:
        entry = self.entry(key)
        paragraphs = entry.record["paragraphs"]
        if not 0 <= index < len(paragraphs):
            raise DeskError(404, f"document {key!r} has no paragraph {index} (it has {len(paragraphs)})")
        return entry, paragraphs[index]

    def correct(self, key: str, index: int, labels: list[str], seen: str | None) -> dict[str, Any]:
        entry, paragraph = self._paragraph(key, index)
        known = domain_ids(entry)
        unknown = sorted(set(labels) - set(known))
        if unknown:
            raise DeskError(400, f"unknown label(s) {unknown}; this document's domains are {', '.join(known)}")
        info = {"model_version": entry.record.get("model_version", ""), "predicted": list(paragraph["labels"]),
                "desk_doc": key}
        try:
            result = self._backend().correct(_store_paragraph(entry, paragraph), labels, info=info, seen=seen)
        except InputError as err:
            raise DeskError(400, str(err)) from None
        return {**result, "paragraph": paragraph_view(entry, paragraph, result["state"], self.config.low_confidence)}

    def undo(self, key: str, index: int, version: str) -> dict[str, Any]:
        entry, paragraph = self._paragraph(key, index)
        try:
            result = self._backend().undo(_store_paragraph(entry, paragraph), version)
        except InputError as err:
            raise DeskError(400, str(err)) from None
        return {**result, "paragraph": paragraph_view(entry, paragraph, result.get("state"), self.config.low_confidence)}

    def review_queue(self, n: int | None = None) -> list[dict[str, Any]]:
        """Paragraphs to review next: suggest's uncertain-and-diverse pick among the inbox's unlabelled ones."""
        entries = self.inbox.entries()
        states = self.states(entries)
        candidates = review_candidates(entries, states)
        if not candidates:
            return []
        picked = self._backend().to_review(candidates, n or self.config.review_n)
        by_id = {c["id"]: c for c in candidates}
        out = []
        for item in picked:
            candidate = by_id[item["id"]]
            entry = self.entry(candidate["key"])
            view = paragraph_view(entry, entry.record["paragraphs"][candidate["index"]], None, self.config.low_confidence)
            out.append({"key": entry.key, "title": entry.title, "uncertainty": item.get("uncertainty"),
                        "domains": domain_ids(entry), "paragraph": view})
        return out

    def submit_retrain(self) -> Job:
        backend = self._backend()
        assert self.trainer is not None
        running = self.trainer.busy()
        if running is not None:
            raise DeskError(409, f"a retraining is already running (job {running.id}); wait for it to finish")
        off = backend.status().get("retrain")
        if off:
            raise DeskError(409, off)

        def work(job: Job) -> dict[str, Any]:
            result = backend.retrain(lambda phase, done, total: job.update(phase=phase, done=done, total=total))
            return {"version": result["version"], "promote": result["report"]["gate"]["promote"]}

        return self.trainer.submit("retrain", "retrain", work)


def _store_paragraph(entry: Entry, paragraph: dict) -> dict:
    """A paragraph as the label store takes it: id, document, source, text."""
    return {"id": paragraph["id"], "doc_id": entry.record["id"], "text": paragraph["text"],
            "source": f"desk:{entry.filename}"}
