"""Document-level results: plain data classes and the pure aggregation over them.

The predictor produces per-paragraph scores; everything a reader asks about a
whole document ("which domains does it cover, how much of it, where is the
evidence") is derived here from those scores without touching a model, so it
is cheap to test and identical for every backend and engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from policylens.document import Document, Paragraph

BODY_KINDS = ("body",)  # titles, headings and speaker lines are tagged but not counted in shares


@dataclass(frozen=True)
class AggregateConfig:
    """How paragraph tags become document-level domains."""

    top_k: int = 3  # evidence paragraphs kept per domain
    min_paragraphs: int = 1  # a domain is "covered" when at least this many body paragraphs carry it
    excerpt_chars: int = 80  # evidence text is cut to this length (the full text is in `paragraphs`)

    def __post_init__(self) -> None:
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.min_paragraphs < 1:
            raise ValueError(f"min_paragraphs must be >= 1, got {self.min_paragraphs}")
        if self.excerpt_chars < 0:
            raise ValueError(f"excerpt_chars must be >= 0, got {self.excerpt_chars}")


@dataclass(frozen=True)
class TaggedParagraph:
    """One segmented paragraph with its calibrated scores and thresholded labels."""

    paragraph: Paragraph
    scores: dict[str, float]
    labels: tuple[str, ...]

    @property
    def is_body(self) -> bool:
        return self.paragraph.kind in BODY_KINDS

    def to_dict(self) -> dict[str, Any]:
        return {**self.paragraph.to_dict(), "scores": dict(self.scores), "labels": list(self.labels)}


@dataclass(frozen=True)
class Evidence:
    """A paragraph that supports a domain, strongest first."""

    paragraph_id: str
    index: int
    score: float
    excerpt: str

    def to_dict(self) -> dict[str, Any]:
        return {"paragraph_id": self.paragraph_id, "index": self.index, "score": self.score, "excerpt": self.excerpt}


@dataclass(frozen=True)
class DomainStat:
    """How much of a document's body is about one domain."""

    label: str
    paragraphs: int  # body paragraphs labelled with it
    share: float  # ... as a fraction of body paragraphs
    char_share: float  # ... as a fraction of body characters
    max_score: float  # strongest body-paragraph score, labelled or not
    evidence: tuple[Evidence, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "paragraphs": self.paragraphs,
            "share": self.share,
            "char_share": self.char_share,
            "max_score": self.max_score,
            "evidence": [e.to_dict() for e in self.evidence],
        }


@dataclass(frozen=True)
class SummarySentence:
    text: str
    paragraph_id: str | None = None
    start: int | None = None  # character offsets in Document.text
    end: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "paragraph_id": self.paragraph_id, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class SummaryView:
    """The summariser's output reduced to what we serialise (the summariser's own type stays private)."""

    text: str
    sentences: tuple[SummarySentence, ...] = ()
    method: str | None = None  # what the summariser actually ran ("trained", "textrank", "lead")
    notes: tuple[str, ...] = ()  # its fallbacks, in words

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "sentences": [s.to_dict() for s in self.sentences],
            "method": self.method,
            "notes": list(self.notes),
        }

    @classmethod
    def from_summary(cls, summary: Any, document: Document) -> "SummaryView":
        """Duck-typed over `.text` and `.sentences` (objects or dicts with paragraph_id/start/end)."""
        sentences = []
        for sentence in getattr(summary, "sentences", None) or ():
            get = sentence.get if isinstance(sentence, Mapping) else lambda k, s=sentence: getattr(s, k, None)
            start, end = get("start"), get("end")
            text = get("text")
            if text is None and isinstance(start, int) and isinstance(end, int):
                text = document.text[start:end]
            sentences.append(SummarySentence(text=str(text or ""), paragraph_id=get("paragraph_id"), start=start, end=end))
        text = getattr(summary, "text", None)
        if text is None:
            text = "".join(s.text for s in sentences)
        method = getattr(summary, "method", None)
        notes = tuple(str(n) for n in getattr(summary, "notes", None) or ())
        return cls(text=str(text), sentences=tuple(sentences), method=method, notes=notes)


@dataclass
class DocumentAnalysis:
    """Everything `analyze` says about one document; `to_dict()` is the JSON form."""

    doc_id: str
    title: str | None
    source: str | None
    paragraphs: list[TaggedParagraph]
    domains: dict[str, DomainStat]  # every taxonomy label, in taxonomy order
    labels: list[str]  # the domains the document covers (see AggregateConfig.min_paragraphs)
    summary: SummaryView | None = None
    summary_error: str | None = None  # why there is no summary, when one was asked for
    model_version: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def body_paragraphs(self) -> int:
        return sum(p.is_body for p in self.paragraphs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.doc_id,
            "title": self.title,
            "source": self.source,
            "model_version": self.model_version,
            "labels": list(self.labels),
            "domains": {label: stat.to_dict() for label, stat in self.domains.items()},
            "summary": self.summary.to_dict() if self.summary else None,
            "summary_error": self.summary_error,
            "n_paragraphs": len(self.paragraphs),
            "n_body_paragraphs": self.body_paragraphs,
            "paragraphs": [p.to_dict() for p in self.paragraphs],
            "meta": dict(self.meta),
        }


def aggregate_domains(
    tagged: Sequence[TaggedParagraph], labels: Sequence[str], config: AggregateConfig | None = None
) -> dict[str, DomainStat]:
    """Per label: share of body paragraphs and characters carrying it, and its strongest evidence."""
    config = config or AggregateConfig()
    body = [p for p in tagged if p.is_body]
    total_chars = sum(len(p.paragraph.text) for p in body)
    stats = {}
    for label in labels:
        carrying = [p for p in body if label in p.labels]
        strongest = sorted(carrying, key=lambda p: (-p.scores.get(label, 0.0), p.paragraph.index))
        evidence = tuple(
            Evidence(
                paragraph_id=p.paragraph.id,
                index=p.paragraph.index,
                score=p.scores.get(label, 0.0),
                excerpt=p.paragraph.text[: config.excerpt_chars],
            )
            for p in strongest[: config.top_k]
        )
        chars = sum(len(p.paragraph.text) for p in carrying)
        stats[label] = DomainStat(
            label=label,
            paragraphs=len(carrying),
            share=round(len(carrying) / len(body), 4) if body else 0.0,
            char_share=round(chars / total_chars, 4) if total_chars else 0.0,
            max_score=max((p.scores.get(label, 0.0) for p in body), default=0.0),
            evidence=evidence,
        )
    return stats


def covered_labels(domains: Mapping[str, DomainStat], config: AggregateConfig | None = None) -> list[str]:
    """Covered domains, largest share first (ties: taxonomy order)."""
    config = config or AggregateConfig()
    order = {label: i for i, label in enumerate(domains)}
    covered = [s for s in domains.values() if s.paragraphs >= config.min_paragraphs]
    return [s.label for s in sorted(covered, key=lambda s: (-s.char_share, order[s.label]))]


def build_analysis(
    document: Document,
    tagged: Sequence[TaggedParagraph],
    labels: Sequence[str],
    *,
    summary: SummaryView | None = None,
    summary_error: str | None = None,
    model_version: str = "",
    config: AggregateConfig | None = None,
) -> DocumentAnalysis:
    """Assemble one DocumentAnalysis from already-tagged paragraphs (no model involved)."""
    domains = aggregate_domains(tagged, labels, config)
    return DocumentAnalysis(
        doc_id=document.id,
        title=document.title,
        source=document.source,
        paragraphs=list(tagged),
        domains=domains,
        labels=covered_labels(domains, config),
        summary=summary,
        summary_error=summary_error,
        model_version=model_version,
        meta=dict(document.meta),
    )
