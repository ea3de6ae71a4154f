"""A versioned labelled-paragraph store: an append-only event log replayed into datasets.

The seed annotations and the shared silver file stay where they are (read-only
"base" sources); `policylens add` appends events to `<root>/log.jsonl`:

  add        new labelled paragraphs (validated, de-duplicated by normalised text)
  correct    new labels for existing paragraph ids (base or store)
  new_label  a domain appended to the taxonomy
  withdraw   paragraphs taken out again (a review desk's undo of the click that added them)

Each event carries a timestamp, its source file, content hashes and a chained
`version` (sha256 of the previous version + the event), so the dataset version
is a hash of the log and any earlier version can be rebuilt by replaying the
log up to it (`LabelStore.rows(version)`). `manifest.json` is derived from the
log (counts per label and per source) and rewritten atomically after each add.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from policylens.chinese import normalize
from policylens.dataset import default_sources, load_labelled
from policylens.hashing import text_hash
from policylens.io import (
    InputError,
    atomic_write,
    read_jsonl,
    utc_timestamp,
    write_json,
)
from policylens.paths import STORE_DIR
from policylens.taxonomy import DEFAULT_TAXONOMY_PATH, Label, Taxonomy
from training.label_files import (
    Incoming,
    expand_inputs,
    parse_file,
)

DEFAULT_STORE_DIR = STORE_DIR
LOG_FILE = "log.jsonl"
MANIFEST_FILE = "manifest.json"
EMPTY_VERSION = "empty"
EVENT_TYPES = ("add", "correct", "new_label", "withdraw")
_MAX_ERRORS = 20
# What a folder given to `add` stands for: its files with these suffixes, directly inside it.


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _chain(previous: str, event: dict) -> str:
    body = {k: v for k, v in event.items() if k != "version"}
    return hashlib.sha256(previous.encode() + b"\n" + _canonical(body)).hexdigest()[:16]


@dataclass
class AddReport:
    """What an add did; duplicates and conflicts were skipped, never written."""

    version: str
    added: list[str] = field(default_factory=list)  # paragraph ids
    corrected: list[str] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)  # {where, id, existing_id}
    conflicts: list[dict] = field(default_factory=list)  # {where, id, existing_id, labels, existing_labels, reason}
    new_label: str | None = None

    def summary(self) -> str:
        parts = [f"{len(self.added)} added", f"{len(self.corrected)} corrected",
                 f"{len(self.duplicates)} duplicates skipped", f"{len(self.conflicts)} conflicts skipped"]
        if self.new_label:
            parts.append(f"new label {self.new_label}")
        return ", ".join(parts) + f"; dataset version {self.version}"


# -- parsing ------------------------------------------------------------------


class LabelStore:
    """Base sources + the event log under `root`; `rows(version)` replays any version."""

    def __init__(
        self,
        root: str | Path = DEFAULT_STORE_DIR,
        *,
        taxonomy_path: str | Path = DEFAULT_TAXONOMY_PATH,
        base_sources: Sequence[str | Path] | None = None,
    ) -> None:
        self.root = Path(root)
        self.taxonomy_path = Path(taxonomy_path)
        self.base_sources = [Path(p) for p in (default_sources() if base_sources is None else base_sources)]

    @property
    def log_path(self) -> Path:
        return self.root / LOG_FILE

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_FILE

    def taxonomy(self) -> Taxonomy:
        return Taxonomy.load(self.taxonomy_path)

    def events(self) -> list[dict]:
        if not self.log_path.exists():
            return []
        return [event for _, event in read_jsonl(self.log_path)]

    @property
    def version(self) -> str:
        """The dataset version: the chained hash of the last log event."""
        events = self.events()
        return events[-1]["version"] if events else EMPTY_VERSION

    def versions(self) -> list[str]:
        return [EMPTY_VERSION] + [event["version"] for event in self.events()]

    def _base_rows(self, taxonomy: Taxonomy) -> list[dict]:
        rows = load_labelled(self.base_sources, taxonomy) if self.base_sources else []
        for row in rows:
            row["origin"] = "base"
            row["added_in"] = EMPTY_VERSION
        return rows

    def rows(self, version: str | None = None) -> list[dict]:
        """The full dataset (base rows + store events) as of `version` (None: the latest)."""
        events = self.events()
        if version is not None and version != EMPTY_VERSION and version not in {e["version"] for e in events}:
            raise InputError(f"{self.log_path}: unknown dataset version {version!r}")
        by_id: dict[str, dict] = {row["id"]: row for row in self._base_rows(self.taxonomy())}
        if version != EMPTY_VERSION:
            for event in events:
                if event["type"] == "add":
                    for row in event["rows"]:
                        by_id[row["id"]] = {**row, "origin": "store", "added_in": event["version"]}
                elif event["type"] == "correct":
                    for fix in event["rows"]:
                        if fix["id"] in by_id:
                            by_id[fix["id"]] = {**by_id[fix["id"]], "labels": list(fix["labels"]),
                                                "corrected_in": event["version"]}
                elif event["type"] == "withdraw":
                    for gone in event["rows"]:
                        if by_id.get(gone["id"], {}).get("origin") == "store":  # base rows are never withdrawn
                            del by_id[gone["id"]]
                if event["version"] == version:
                    break
        return [dict(row) for row in by_id.values()]

    def manifest(self) -> dict:
        rows = self.rows()
        per_label = Counter(label for row in rows for label in row["labels"])
        return {
            "version": self.version,
            "events": len(self.events()),
            "rows": len(rows),
            "store_rows": sum(row["origin"] == "store" for row in rows),
            "none_rows": sum(not row["labels"] for row in rows),
            "per_label": dict(sorted(per_label.items())),
            "per_source": dict(sorted(Counter(row["source"] for row in rows).items())),
            "base_sources": [{"path": str(p), "sha256": _file_hash(p)} for p in self.base_sources],
            "updated": utc_timestamp(),
        }

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (two `policylens add` runs must not both append to the old log)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def add(self, paths: Iterable[str | Path], new_label: Label | None = None) -> AddReport:
        """Validate every file, then append one event per file (all or nothing).

        Unknown labels and malformed rows raise InputError naming file:line and
        nothing is written; duplicates (same normalised text and labels) and
        conflicts (same text or id, other labels, without `correction`) are
        skipped and reported.
        """
        paths, path_errors = expand_inputs(paths, self.root)
        if path_errors:
            raise InputError("\n".join(path_errors))
        if not paths:
            raise InputError("no files to add")
        with self._locked():
            taxonomy = self.taxonomy()
            if new_label is not None:
                if new_label.id in taxonomy:
                    raise InputError(f"{self.taxonomy_path}: label {new_label.id!r} is already in the taxonomy")
                taxonomy = taxonomy.with_label(new_label)
            existing = self.rows()
            by_id = {row["id"]: row for row in existing}
            by_hash = {text_hash(row["text"]): row for row in existing}

            parsed: list[tuple[Path, list[Incoming]]] = []
            errors: list[str] = []
            for path in paths:
                try:
                    rows, file_errors = parse_file(path)
                except InputError as err:  # unreadable file: report it with the others, write nothing
                    errors.append(str(err))
                    continue
                errors += file_errors
                for row in rows:
                    unknown = sorted(set(row.labels) - set(taxonomy.ids))
                    if unknown:
                        errors.append(f"{row.where}: unknown label(s) {unknown}; the taxonomy has {taxonomy.ids} "
                                      "(add a domain with --new-label)")
                    if row.correction and row.id not in by_id:
                        errors.append(f"{row.where}: correction for unknown paragraph id {row.id!r}")
                parsed.append((path, rows))
            if errors:
                more = f"\n... and {len(errors) - _MAX_ERRORS} more" if len(errors) > _MAX_ERRORS else ""
                raise InputError("\n".join(errors[:_MAX_ERRORS]) + more)

            report = AddReport(version=self.version)
            events: list[dict] = []
            if new_label is not None:
                events.append({"type": "new_label", "source": "cli", "label": asdict(new_label) | {"keywords": list(new_label.keywords)}})
                report.new_label = new_label.id
            for path, rows in parsed:
                added, corrected = self._apply(rows, taxonomy, by_id, by_hash, report)
                if added:
                    events.append({"type": "add", "source": str(path), "file_sha256": _file_hash(path), "rows": added})
                if corrected:
                    events.append({"type": "correct", "source": str(path), "file_sha256": _file_hash(path), "rows": corrected})
            if not events:
                return report
            if new_label is not None:
                taxonomy.save(self.taxonomy_path)  # before the log: a logged row never names a label the file lacks
            self._append(events)
            report.version = self.version
            write_json(self.manifest_path, self.manifest())
            return report

    def review(self, paragraph: dict, labels: Sequence[str] | None, *, source: str, info: dict | None = None) -> dict:
        """Record one reviewer's decision on one paragraph as one event, written before this returns.

        Why not `add`: a review desk's click must always be recorded (two reviewers setting the
        same labels are two rows, the later wins on replay) and carry what the click saw (`info`:
        e.g. the model version that predicted the paragraph and its predicted labels).
        `paragraph` needs `id` and `text` (`doc_id`, `source` optional). A paragraph the store
        holds (same id, or the same normalised text under another id) gets a `correct` row; an
        unknown one an `add` row (its id gets a hash suffix if another text already uses it).
        `labels=None` withdraws a paragraph that the store holds only from earlier events (an
        undo of the click that added it); base rows cannot be withdrawn. Returns the event.
        """
        with self._locked():
            taxonomy = self.taxonomy()
            unknown = sorted(set(labels or ()) - set(taxonomy.ids))
            if unknown:
                raise InputError(f"unknown label(s) {unknown}; the taxonomy has {taxonomy.ids}")
            text = normalize(str(paragraph["text"]))
            digest = text_hash(text)
            rows = self.rows()
            by_id = {row["id"]: row for row in rows}
            same = by_id.get(paragraph["id"])
            if same is None or text_hash(same["text"]) != digest:
                same = next((row for row in rows if text_hash(row["text"]) == digest), None)
            extra = {"review": dict(info)} if info else {}
            if labels is None:
                if same is None or same["origin"] != "store":
                    raise InputError(f"paragraph {paragraph['id']!r}: only a paragraph added by an earlier event "
                                     "can be withdrawn")
                event = {"type": "withdraw", "source": source, "rows": [{"id": same["id"], "text_hash": digest, **extra}]}
            elif same is not None:
                ordered = sorted(set(labels), key=taxonomy.index)
                event = {"type": "correct", "source": source, "rows": [
                    {"id": same["id"], "labels": ordered, "old_labels": same["labels"], "text_hash": digest, **extra}]}
            else:
                row_id = str(paragraph["id"]) if paragraph["id"] not in by_id else f"{paragraph['id']}~{digest[:8]}"
                event = {"type": "add", "source": source, "rows": [{
                    "id": row_id, "doc_id": str(paragraph.get("doc_id") or row_id.split("#")[0]),
                    "source": str(paragraph.get("source") or source), "text": text,
                    "labels": sorted(set(labels), key=taxonomy.index), "text_hash": digest, **extra}]}
            self._append([event])
            write_json(self.manifest_path, self.manifest())
            return self.events()[-1]

    def _apply(self, rows: list[Incoming], taxonomy: Taxonomy, by_id: dict, by_hash: dict,
               report: AddReport) -> tuple[list[dict], list[dict]]:
        added: list[dict] = []
        corrected: list[dict] = []
        for row in rows:
            labels = sorted(set(row.labels), key=taxonomy.index)
            if row.correction:
                old = by_id[row.id]
                if old["labels"] == labels:
                    report.duplicates.append({"where": row.where, "id": row.id, "existing_id": row.id})
                    continue
                fix = {"id": row.id, "labels": labels, "old_labels": old["labels"], "text_hash": text_hash(old["text"])}
                corrected.append(fix)
                by_id[row.id] = {**old, "labels": labels}
                report.corrected.append(row.id)
                continue
            text = normalize(row.text)
            digest = text_hash(text)
            same_text = by_hash.get(digest)
            same_id = by_id.get(row.id)
            if same_text is not None:
                entry = {"where": row.where, "id": row.id, "existing_id": same_text["id"]}
                if same_text["labels"] == labels:
                    report.duplicates.append(entry)
                else:
                    report.conflicts.append({**entry, "labels": labels, "existing_labels": same_text["labels"],
                                             "reason": "same text already labelled differently (send a correction to change it)"})
                continue
            if same_id is not None:
                report.conflicts.append({"where": row.where, "id": row.id, "existing_id": row.id, "labels": labels,
                                         "existing_labels": same_id["labels"], "reason": "id already used for another text"})
                continue
            new = {"id": row.id, "doc_id": row.doc_id or row.id.split("#")[0], "source": row.source,
                   "text": text, "labels": labels, "text_hash": digest}
            added.append(new)
            by_id[row.id] = by_hash[digest] = new
            report.added.append(row.id)
        return added, corrected

    def _append(self, events: list[dict]) -> None:
        """Rewrite the log atomically with the new events chained on (readers never see half a line)."""
        previous = self.version
        old = self.log_path.read_bytes() if self.log_path.exists() else b""
        with atomic_write(self.log_path, "wb") as handle:
            handle.write(old)
            for event in events:
                event = {"type": event["type"], "time": utc_timestamp(), **event}
                event["content_sha256"] = hashlib.sha256(_canonical(event.get("rows") or event.get("label"))).hexdigest()
                event["prev"] = previous
                event["version"] = previous = _chain(previous, event)
                handle.write(json.dumps(event, ensure_ascii=False).encode("utf-8") + b"\n")

    def verify(self) -> list[str]:
        """Problems in the log: a broken hash chain or an unknown event type (empty when sound)."""
        problems: list[str] = []
        previous = EMPTY_VERSION
        for i, event in enumerate(self.events(), 1):
            if event.get("type") not in EVENT_TYPES:
                problems.append(f"{self.log_path}:{i}: unknown event type {event.get('type')!r}")
            if event.get("prev") != previous or _chain(previous, event) != event.get("version"):
                problems.append(f"{self.log_path}:{i}: hash chain broken (edited or reordered log)")
            previous = event.get("version", "")
        return problems


def _file_hash(path: Path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None
