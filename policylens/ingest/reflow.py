"""Re-flow hard-wrapped text (PDF text layers, PDF-derived corpus rows) into one paragraph per line.

Printed text breaks every ~26-40 characters. A break is kept only where a
paragraph plausibly ends: after sentence-final punctuation, after a line that
stops well short of the usual line width, or before a heading/enumerator.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter

SENTENCE_END = tuple("。！？；：”」!?;:…")
HEADING_START = re.compile(
    r"^(第[一二三四五六七八九十百千零〇\d]+[章节條条款部编篇]|[一二三四五六七八九十百]+[、．.]|"
    r"[（(][一二三四五六七八九十百\d]+[)）]|\d+[.．、](?!\d)|\d+[)）]|[①-⑳]|——|附件|附：|附:)")
PAGE_NUMBER = re.compile(
    r"^(?:[-—–－\s]*\d+[-—–－\s]*|第\s*\d+\s*页(?:\s*[/／,，]?\s*共\s*\d+\s*页)?|\d+\s*[/／]\s*\d+|"
    r"(?:page|p\.)\s*\d+(?:\s*of\s*\d+)?)$", re.I)
TOC_LINE = re.compile(r"(\.{4,}|…{2,}|·{4,})\s*\d*$")  # "一、总体要求........3"
SHORT_LINE = 0.8  # a line narrower than this share of the usual width ends its paragraph


def reflow_pages(pages: list[list[str]]) -> str:
    """Drop page numbers and running headers/footers, then join lines into paragraphs."""
    pages = [[line.strip() for line in page] for page in pages]
    repeated = _running_lines(pages)
    lines: list[str] = []
    for page in pages:
        edges = _edge_indexes(page)
        for index, line in enumerate(page):
            if PAGE_NUMBER.match(line) or (index in edges and _key(line) in repeated):
                continue
            lines.append(line)  # "" (a blank line) is kept: it ends a paragraph
    return "\n".join(join_lines(lines))


def join_lines(lines: list[str]) -> list[str]:
    full = usual_width(lines)
    paragraphs: list[str] = []
    current, previous_line = "", ""
    for line in lines:
        if current and line and _continues(current, previous_line, line, full):
            current = _join(current, line)
        else:
            if current:
                paragraphs.append(current)
            current = line
        previous_line = line
    if current:
        paragraphs.append(current)
    return paragraphs


def unwrap(text: str) -> tuple[str, bool]:
    """Re-flow `text` if it looks hard-wrapped; return (text, whether it was re-flowed)."""
    if not looks_hard_wrapped(text):
        return text, False
    return reflow_pages([text.split("\n")]), True


def looks_hard_wrapped(text: str, min_lines: int = 20, min_share: float = 0.4) -> bool:
    """True when many line breaks fall mid-sentence after a long line: text copied out of a PDF.

    Well-formed text breaks after 。 or after short headings; the thresholds leave alone
    news items whose un-punctuated sub-headings are long (checked on the shared corpus).
    """
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if len(lines) < min_lines:
        return False
    mid = sum(1 for line, following in zip(lines, lines[1:])
              if width(line) >= 40 and not line.endswith(SENTENCE_END) and not HEADING_START.match(following))
    return mid >= min_share * (len(lines) - 1)


def width(text: str) -> int:
    """Printed width: CJK characters count twice (digits and Latin letters are half as wide)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def usual_width(lines: list[str]) -> float:
    """Width of a full printed line: the commonest width among long lines (justified lines share it)."""
    widths = sorted(width(line) for line in lines if line)
    if not widths:
        return 0.0
    p90 = widths[min(len(widths) - 1, int(len(widths) * 0.9))]
    common = Counter(w for w in widths if w >= p90 / 2).most_common()
    if common and common[0][1] >= 3:
        top = common[0][1]
        return float(max(w for w, count in common if count == top))
    return float(p90)


def _continues(paragraph: str, previous_line: str, line: str, full: float) -> bool:
    if paragraph.endswith(SENTENCE_END) or HEADING_START.match(line) or TOC_LINE.search(previous_line):
        return False
    return width(previous_line) >= SHORT_LINE * full


def _join(previous: str, line: str) -> str:
    """Latin words split across lines need a space; Chinese characters do not."""
    if previous[-1].isascii() and previous[-1].isalnum() and line[0].isascii() and line[0].isalnum():
        return f"{previous} {line}"
    return previous + line


def _key(line: str) -> str:
    return re.sub(r"\d+", "#", re.sub(r"\s+", "", line))


def _edge_indexes(page: list[str], depth: int = 2) -> set[int]:
    """Indexes of the first and last `depth` non-blank lines: where running headers/footers sit."""
    nonblank = [index for index, line in enumerate(page) if line]
    return set(nonblank[:depth] + nonblank[-depth:])


def _running_lines(pages: list[list[str]]) -> set[str]:
    """Lines (digits ignored) that open or close most pages: running headers and footers."""
    if len(pages) < 2:
        return set()
    counts: Counter[str] = Counter()
    for page in pages:
        counts.update({_key(page[index]) for index in _edge_indexes(page)})
    needed = max(2, math.ceil(0.6 * len(pages)))
    return {key for key, count in counts.items() if count >= needed and key}
