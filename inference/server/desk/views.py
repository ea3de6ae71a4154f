"""What the pages show, derived from inbox records and label states; pure functions, no I/O.

A paragraph's *current* labels are the label store's when it holds the paragraph
(a review on the desk, or a seed/silver annotation), else the model's prediction.
Domain counts, exports and the to-review queue all use the current labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from inference.analysis import TaggedParagraph, aggregate_domains, covered_labels
from inference.server.desk.inbox import Entry
from inference.server.desk.pipeline import document_of

MIN_REVIEW_CHARS = 15  # what suggest skips as headings and fragments


def low_confidence(scores: Mapping[str, float], thresholds: Mapping[str, float], margin: float) -> bool:
    """True when some label's score lies within `margin` of its threshold, relative to the distance
    from the threshold to 0 or 1 (suggest's uncertainty is at least 1 - margin)."""
    for label, p in scores.items():
        t = thresholds.get(label)
        if t is None:
            continue
        span = (1.0 - t) if p >= t else t
        if abs(p - t) / max(span, 1e-6) < margin:
            return True
    return False


def domain_ids(entry: Entry, extra: Sequence[str] = ()) -> list[str]:
    """The chips of a document: its model's domains (taxonomy order), then any other label the store uses."""
    ids = list(entry.record.get("domains") or {})
    return ids + [label for label in extra if label not in ids]


def paragraph_view(entry: Entry, paragraph: Mapping[str, Any], state: Mapping[str, Any] | None,
                   margin: float) -> dict[str, Any]:
    predicted = list(paragraph["labels"])
    labels = list(state["labels"]) if state else predicted
    body = paragraph["kind"] == "body"
    return {
        "index": paragraph["index"], "id": paragraph["id"], "kind": paragraph["kind"], "text": paragraph["text"],
        "headings": list(paragraph.get("headings") or ()), "speaker": paragraph.get("speaker"),
        "scores": dict(paragraph["scores"]), "predicted": predicted, "labels": labels,
        "reviewed": state is not None, "origin": state["origin"] if state else "model",
        "version": state.get("version") if state else None, "reviews": list(state.get("reviews") or ()) if state else [],
        "review_count": state.get("count", 0) if state else 0,
        "low": body and low_confidence(paragraph["scores"], entry.thresholds, margin),
        "differs": set(labels) != set(predicted),
    }


def paragraph_views(entry: Entry, states: Mapping[str, Mapping], margin: float) -> list[dict[str, Any]]:
    return [paragraph_view(entry, p, states.get(p["id"]), margin) for p in entry.record["paragraphs"]]


def current_record(entry: Entry, states: Mapping[str, Mapping], domain: str | None = None) -> dict[str, Any]:
    """The record with current labels (and domain shares recomputed from them), as the writers take it.

    Each paragraph says where its labels come from (`label_source`: model, review, seed, ...).
    With `domain`, only the paragraphs that carry it are kept (the document view filtered by it).
    """
    record = entry.record
    document = document_of(record, entry.text)
    tagged, rows = [], []
    for paragraph, row in zip(document.paragraphs, record["paragraphs"]):
        state = states.get(row["id"])
        labels = tuple(state["labels"]) if state else tuple(row["labels"])
        tagged.append(TaggedParagraph(paragraph=paragraph, scores=dict(row["scores"]), labels=labels))
        rows.append({**row, "labels": list(labels), "label_source": state["origin"] if state else "model"})
    domains = aggregate_domains(tagged, domain_ids(entry))
    if domain is not None:
        rows = [row for row in rows if domain in row["labels"]]
    return {**record, "labels": covered_labels(domains), "domains": {k: v.to_dict() for k, v in domains.items()},
            "paragraphs": rows, "n_paragraphs": len(rows)}


def source_text(entry: Entry) -> str:
    """The document's own source when it names one (a corpus row's "news", "policy"), then the uploaded file."""
    upload = entry.record.get("source") or ""
    own = (entry.record.get("meta") or {}).get("source")
    return f"{own} · {upload}" if isinstance(own, str) and own.strip() and own != upload else upload


def document_row(entry: Entry, states: Mapping[str, Mapping], margin: float) -> dict[str, Any]:
    """One line of the inbox list: per-domain paragraph counts (current labels), date, source, review state."""
    counts = {label: 0 for label in domain_ids(entry)}
    reviewed = low = body = 0
    for paragraph in entry.record["paragraphs"]:
        if paragraph["kind"] != "body":
            continue
        body += 1
        state = states.get(paragraph["id"])
        for label in (state["labels"] if state else paragraph["labels"]):
            counts[label] = counts.get(label, 0) + 1
        reviewed += state is not None and state.get("origin") == "review"
        low += low_confidence(paragraph["scores"], entry.thresholds, margin)
    return {
        "key": entry.key, "id": entry.record["id"], "title": entry.title, "source": source_text(entry),
        "date": entry.date, "uploaded": entry.uploaded, "model_version": entry.record.get("model_version", ""),
        "counts": counts, "paragraphs": body, "reviewed": reviewed, "low": low,
    }


def review_candidates(entries: Sequence[Entry], states: Mapping[str, Mapping]) -> list[dict[str, Any]]:
    """Body paragraphs nobody has labelled yet, with the scores and thresholds they were tagged with."""
    out = []
    for entry in entries:
        for paragraph in entry.record["paragraphs"]:
            if paragraph["kind"] != "body" or len(paragraph["text"]) < MIN_REVIEW_CHARS or paragraph["id"] in states:
                continue
            out.append({"id": paragraph["id"], "doc_id": entry.record["id"], "key": entry.key, "index": paragraph["index"],
                        "text": paragraph["text"], "scores": dict(paragraph["scores"]), "thresholds": dict(entry.thresholds)})
    return out
