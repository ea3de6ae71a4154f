"""Sentence units: what the summariser picks, with pointers back to the source text."""

from __future__ import annotations

import re
from dataclasses import dataclass

from policylens.chinese import normalize
from policylens.document import Document
from policylens.segment import HEADING_LEVELS, segment, split_sentences

MIN_SENTENCE_CHARS = 4  # fewer content characters: a fragment ("附件：", "1."), never a summary sentence
_DASH_TITLE = re.compile(r"^(——|－－|--)")
_CONTENT = re.compile(r"[\w]")
_ENDS_SENTENCE = re.compile(r"[。！？；!?;…][”’」』）)】\"']*$")
_DOC_TITLE = re.compile(r"(通知|意见|办法|方案|规划|决定|公告|细则|规定|报告|计划|纲要|指南)$")


def _is_label_line(paragraph_text: str) -> bool:
    """A whole paragraph without sentence-final punctuation that is short ("国务院总理") or names a
    document ("……关于……的通知"), or a short line ending in a colon: a signature, caption,
    title or addressee line the segmenter kept as body. Context, never a summary sentence."""
    text = paragraph_text.strip()
    if text.endswith((":", "：")) and len(text) <= 80:
        return True  # "各省、自治区、直辖市……:" addressees, "以下是回复全文:"
    return not _ENDS_SENTENCE.search(text) and (len(text) <= 30 or bool(_DOC_TITLE.search(text)))


@dataclass(frozen=True)
class SentenceUnit:
    """One candidate sentence: normalised text plus where it sits in Document.text."""

    text: str  # normalised (Simplified) text
    paragraph_id: str
    start: int  # document.text[start:end] is the sentence as written
    end: int
    paragraph_index: int  # rank of its paragraph among the body paragraphs
    index_in_paragraph: int
    section: str = ""  # outermost enclosing heading ("" before the first heading)
    headings: tuple[str, ...] = ()
    opens_section: bool = False  # first sentence of the first body paragraph under a heading
    run_in: bool = False  # a numbered run-in title such as "（一）加快推动重大项目建设。"
    topic: bool = False  # a short comma-free headline-like sentence ("促进消费稳定增长。") inside a long paragraph
    speaker: str | None = None  # who says it (press conferences, interviews)


def _is_run_in(sentence: str, paragraph_text: str, index_in_paragraph: int) -> bool:
    if index_in_paragraph != 0 or len(sentence) > 40 or len(sentence) >= len(paragraph_text):
        return False
    return bool(_DASH_TITLE.match(sentence) or any(p.match(sentence) for _, p in HEADING_LEVELS))


def _is_topic(sentence: str, paragraph_text: str) -> bool:
    """Government reports introduce each topic with a short headline-like sentence
    ("促进消费稳定增长。") and then elaborate; that sentence is the gist."""
    return 6 <= len(sentence) <= 24 and not re.search(r"[，,：:；、]", sentence) and len(paragraph_text) >= 100


MAX_MERGED_CHARS = 200


def _merge_semicolons(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Rejoin clauses cut at "；" into their sentence while it stays readable (<= 200 chars):
    "目标是：增长5%左右；就业1200万人以上；……。" is one statement, not five."""
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and text[merged[-1][0] : merged[-1][1]].rstrip().endswith(("；", ";")) \
                and b - merged[-1][0] <= MAX_MERGED_CHARS:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return merged


def sentence_units(document: Document) -> list[SentenceUnit]:
    """Sentences of the body paragraphs in reading order (segments the document if needed).

    Titles, headings and speaker lines are context, not candidates: a summary made
    of headings reads like a table of contents."""
    paragraphs = document.paragraphs or segment(document)
    units: list[SentenceUnit] = []
    body_rank = 0
    previous_kind = "title"
    for paragraph in paragraphs:
        if paragraph.kind != "body":
            previous_kind = paragraph.kind
            continue
        after_heading = previous_kind == "heading"
        previous_kind = "body"
        if _is_label_line(paragraph.text):
            continue
        index = 0
        for a, b in _merge_semicolons(paragraph.original, split_sentences(paragraph.original)):
            piece = paragraph.original[a:b]
            lead, trail = len(piece) - len(piece.lstrip()), len(piece) - len(piece.rstrip())
            start, end = paragraph.start + a + lead, paragraph.start + b - trail
            text = normalize(document.text[start:end])
            if len(_CONTENT.findall(text)) < MIN_SENTENCE_CHARS:
                continue
            units.append(
                SentenceUnit(
                    text=text, paragraph_id=paragraph.id, start=start, end=end, paragraph_index=body_rank,
                    index_in_paragraph=index, section=paragraph.headings[0] if paragraph.headings else "",
                    headings=paragraph.headings, opens_section=after_heading and index == 0,
                    run_in=_is_run_in(text, paragraph.text, index),
                    topic=_is_topic(text, paragraph.text), speaker=paragraph.speaker,
                )
            )
            index += 1
        body_rank += 1
    return units
