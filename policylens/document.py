"""Plain data classes shared by every stage of the pipeline.

A :class:`Document` keeps the text as it was received (for display and for
offsets); each :class:`Paragraph` carries both that original text and the
normalised (Simplified, whitespace-cleaned) text the models read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PARAGRAPH_KINDS = ("title", "heading", "speaker", "body")


@dataclass(frozen=True)
class Paragraph:
    """One unit the tagger labels."""

    id: str  # f"{doc_id}#{index}", stable for the same document text and settings
    doc_id: str
    index: int
    text: str  # normalised text (Simplified Chinese) that models read
    original: str  # the same span as it appears in Document.text
    start: int  # character offsets of `original` in Document.text
    end: int
    kind: str = "body"
    headings: tuple[str, ...] = ()  # enclosing headings, outermost first (normalised)
    speaker: str | None = None  # who is speaking (press conferences, interviews)

    def __post_init__(self) -> None:
        if self.kind not in PARAGRAPH_KINDS:
            raise ValueError(f"paragraph {self.id}: unknown kind {self.kind!r}")
        if not 0 <= self.start <= self.end:
            raise ValueError(f"paragraph {self.id}: bad offsets {self.start}..{self.end}")

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["headings"] = list(self.headings)
        return row


@dataclass
class Document:
    """A decoded document, before or after segmentation."""

    id: str
    text: str  # the decoded text as received (boilerplate lines still in place)
    source: str | None = None  # path or corpus name it came from
    title: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    paragraphs: list[Paragraph] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError(f"document from {self.source or '<unknown>'}: empty id")
