"""Split a decoded document into the paragraphs the tagger labels.

Real policy texts are messy: some have one paragraph per line, some (scraped
news) have no line breaks at all, press conferences alternate speaker lines
and answers, plans nest 一、 / （一） / 1. headings, scraped pages keep
share buttons and font-size widgets, PDF conversions break every line at the
page width and leave page numbers mid-sentence, and Wikisource appends its
licence. Each rule below exists for one of those.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

from policylens.chinese import normalize
from policylens.document import Document, Paragraph
from policylens.ingest.base import has_text

# Numbered headings, outermost level first. A line only counts as a heading
# when it is also short and has no sentence-final punctuation (see _is_heading).
HEADING_LEVELS: tuple[tuple[int, re.Pattern[str]], ...] = (
    (0, re.compile(r"^第[一二三四五六七八九十百零〇\d]+[章编篇部分]")),
    (1, re.compile(r"^[一二三四五六七八九十百]+[、．.]")),
    (2, re.compile(r"^[（(][一二三四五六七八九十百]+[)）]")),
    (3, re.compile(r"^\d{1,2}[\.．、](?!\d)")),
    (4, re.compile(r"^[（(]\d{1,2}[)）]")),
)
UNNUMBERED_LEVEL = 1

SENTENCE_END = "。！？；!?;…"
CLOSERS = "”’」』）)】\"'"
_SENTENCE = re.compile(rf"[^{SENTENCE_END}]*(?:[{SENTENCE_END}]+[{CLOSERS}]*|$)")
_TERMINAL = re.compile(rf"[{SENTENCE_END}][{CLOSERS}]*$")
_INNER_PUNCT = re.compile(r"[，,。！？；;]")

# Words that mark a line ending in a colon as a speaker ("工业和信息化部部长 肖亚庆:").
_ROLE = re.compile(
    r"(部长|局长|司长|主任|发言人|主持人|记者|总工程师|总经济师|书记|副|委员|代表|院长|所长|"
    r"董事长|总经理|经理|专家|教授|研究员|处长|厅长|省长|市长|主席|会长|秘书长|^问|^答)"
)
# Forms of address to the audience ("各位代表：" opens a work report) are not speakers, though 代表 is a role.
_SALUTATION = re.compile(r"^(?:各位|诸位|尊敬的|亲爱的)|们$")
_SPEAKER_LINE = re.compile(r"^(?P<who>[^。！？；，,]{1,40}?)\s*[:：]\s*$")
_SPEAKER_PREFIX = re.compile(r"^(?P<who>[^。！？；，,:：]{1,24}?)\s*[:：]\s*(?P<rest>\S.*)$")

# Lines that are page furniture, not content. Matched on the normalised line.
_BOILERPLATE = re.compile(
    r"^(?:"
    r"分享到[:：]?.*|.*【\s*字体[:：].*|.*字号[:：]?\s*[大中小]\s*[大中小].*|【?打印】?|【?关闭(?:窗口)?】?|"
    r"(?:发布)?(?:时间|日期)[:：].{0,40}(?:来源[:：].{0,40})?|来源[:：].{0,40}|"
    r"\d{4}[-/.年]\d{1,2}[-/.月]\d{1,2}日?\s*\d{0,2}:?\d{0,2}(?::\d{2})?\s*(?:来源[:：].{0,40})?|"
    r"(?:责任编辑|编辑|作者|浏览次数|阅读次数)[:：].{0,30}|"
    r"(?:上一篇|下一篇|相关链接|相关阅读|扫一扫.*|(?:返回|回到)\s*顶部|网站地图|联系我们|联系方式|版权所有.*)|"
    r"(?:地址|邮编|传真|电话|秘书处|邮箱|E-?mail)[:：].{0,60}"
    r")$",
    re.IGNORECASE,
)


@dataclass
class SegmentConfig:
    """How paragraphs are cut. `max_chars` matches the silver training data (<= ~400)."""

    max_chars: int = 400
    heading_max_chars: int = 50
    drop_boilerplate: bool = True

    def __post_init__(self) -> None:
        if self.max_chars < 20:
            raise ValueError(f"max_chars must be >= 20, got {self.max_chars}")
        if not 1 <= self.heading_max_chars <= self.max_chars:
            raise ValueError(f"heading_max_chars must be in 1..max_chars, got {self.heading_max_chars}")


# A line starting with one of these continues the line before it (no sentence starts with them).
_CONTINUES = re.compile(r"^[、，,。；;：:．.）)》」』”’%]")
# A bare page number a PDF conversion left inside a wrapped sentence ("…开\n4\n展…", "- 12 -").
_PAGE_NUMBER_TEXT = r"[-—–－\s]*\d{1,3}[-—–－\s]*"
_PAGE_NUMBER = re.compile(rf"^{_PAGE_NUMBER_TEXT}$")
_PAGE_NUMBER_LINE = re.compile(rf"\n{_PAGE_NUMBER_TEXT}\n")
# The licence footer Wikisource puts under every government text ("本作品是中华人民共和国的法律…公有领域").
_LICENCE_FOOTER = re.compile(r"^本作品")
_LICENCE_WORDS = ("公有领域", "Public domain")


def _unclosed(line: str) -> bool:
    """An opening bracket or book-title mark without its closer: the sentence goes on in the next line."""
    return line.count("（") + line.count("(") > line.count("）") + line.count(")") or line.count("《") > line.count("》")


def _wrap_width(lines: list[str]) -> int | None:
    """The line width of a hard-wrapped text (a PDF conversion breaks every line at ~30-40 characters),
    or None when the lines are whole paragraphs.

    A wrapped text has many lines of about the same length that end mid-sentence.
    """
    lengths = sorted(len(line) for line in lines if len(line) >= 10)
    if len(lengths) < 8:
        return None
    width = lengths[int(0.8 * (len(lengths) - 1))]
    if width > 120:
        return None
    full_open = sum(1 for line in lines if len(line) >= 0.85 * width and not _TERMINAL.search(line))
    return width if full_open >= 0.3 * len(lengths) else None


def _join_breaks(span: str) -> str:
    """A wrapped span as one line: breaks vanish between Chinese characters, page numbers go, and only two
    Latin words keep a space between them."""
    span = _PAGE_NUMBER_LINE.sub("\n", span)

    def joiner(match: re.Match[str]) -> str:
        before, after = match.string[match.start() - 1 : match.start()], match.string[match.end() : match.end() + 1]
        return " " if before.isascii() and before.isalpha() and after.isascii() and after.isalpha() else ""

    return re.sub(r"[ \t\u3000]*\n\s*", joiner, span)


def _merge_wrapped(text: str, lines: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Join the lines of one paragraph that a PDF conversion or a web page's inline links broke apart.

    A line joins the one before it when nothing but a line break (or a bare page number) separates
    them, the one before does not end its sentence, the line is not a heading or a speaker, and:
    it starts with punctuation that only continues a sentence, or the line before leaves a bracket
    open, or the text is hard-wrapped and the line before is full width.
    """
    width = _wrap_width([norm for _, _, norm in lines])
    runs: list[list[tuple[int, int, str]]] = []  # the physical lines of each paragraph
    for line in lines:
        start, _, norm = line
        if runs:
            run = runs[-1]
            gap = text[run[-1][1]:start]
            joins = (
                (gap.count("\n") == 1 or _PAGE_NUMBER.match(gap.strip() or "x"))
                and not _TERMINAL.search(run[-1][2])
                and heading_level(norm) is None
                and speaker_of(norm) is None
                and (_CONTINUES.match(norm) or _unclosed("".join(piece for _, _, piece in run))
                     or (width is not None and len(run[-1][2]) >= 0.65 * width))
            )
            if joins:
                run.append(line)
                continue
        runs.append([line])
    return [run[0] if len(run) == 1 else (run[0][0], run[-1][1], normalize(_join_breaks(text[run[0][0]:run[-1][1]])))
            for run in runs]


def _drop_licence_footer(lines: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Cut Wikisource's licence footer: from a last line starting 本作品 to the end, when it names the public domain."""
    for i in range(len(lines) - 1, -1, -1):
        if _LICENCE_FOOTER.match(lines[i][2]):
            tail = "".join(norm for _, _, norm in lines[i:])
            return lines[:i] if len(tail) < 600 and any(word in tail for word in _LICENCE_WORDS) else lines
    return lines


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans (start, end) over `text`, ending after 。！？； and any closing quotes."""
    spans = []
    for match in _SENTENCE.finditer(text):
        if match.end() > match.start():
            spans.append((match.start(), match.end()))
    return spans


def is_boilerplate(line: str) -> bool:
    return bool(_BOILERPLATE.match(line.strip()))


def heading_level(line: str, max_chars: int = 50) -> int | None:
    """Level of a numbered heading line, or None when the line is not one."""
    line = line.strip()
    if len(line) > max_chars or _TERMINAL.search(line):
        return None
    for level, pattern in HEADING_LEVELS:
        if pattern.match(line):
            return level
    return None


def _speaker(who: str, *, loose: bool) -> str | None:
    """`who` when it names a speaker: a role word (or, `loose`, a short or spaced name), never a salutation."""
    who = who.strip()
    if _SALUTATION.search(who):
        return None
    if _ROLE.search(who) or (loose and (" " in who or len(who) <= 4)):
        return who
    return None


def speaker_of(line: str) -> str | None:
    """The speaker named by a bare speaker line ("记者:"), else None."""
    match = _SPEAKER_LINE.match(line.strip())
    return _speaker(match.group("who"), loose=True) if match else None


def _inline_speaker(line: str) -> str | None:
    """'记者：……' / '肖亚庆:……' at the start of an answer paragraph."""
    match = _SPEAKER_PREFIX.match(line.strip())
    return _speaker(match.group("who"), loose=False) if match else None


def _balanced_chunks(text: str, max_chars: int) -> list[tuple[int, int]]:
    """Cut `text` at sentence ends into pieces of similar length, each <= max_chars when possible."""
    if len(text) <= max_chars:
        return [(0, len(text))]
    sentences = []
    for start, end in split_sentences(text):
        # A "sentence" longer than the budget (tables, run-on lists) is cut at commas, then hard.
        while end - start > max_chars:
            window = text[start : start + max_chars]
            cut = max(window.rfind("，"), window.rfind(","), window.rfind("、"))
            cut = start + (cut + 1 if cut > max_chars // 3 else max_chars)
            sentences.append((start, cut))
            start = cut
        sentences.append((start, end))
    n_chunks = math.ceil(len(text) / max_chars)
    target = len(text) / n_chunks
    chunks: list[tuple[int, int]] = []
    chunk_start = sentences[0][0]
    for start, end in sentences:
        size_with = end - chunk_start
        if start > chunk_start and (size_with > max_chars or start - chunk_start >= target):
            chunks.append((chunk_start, start))
            chunk_start = start
    chunks.append((chunk_start, sentences[-1][1]))
    return chunks


def _run_in_title(text: str) -> str | None:
    """'（一）加快推动重大项目建设。各地要……' -> '（一）加快推动重大项目建设'."""
    if not any(pattern.match(text) for _, pattern in HEADING_LEVELS):
        return None
    first = split_sentences(text)[0]
    title = text[first[0] : first[1]].strip()
    if len(title) <= 40 and first[1] < len(text):
        return title.rstrip(SENTENCE_END)
    return None


def _lines(text: str) -> Iterator[tuple[int, int]]:
    """Non-blank lines as (start, end) offsets with surrounding whitespace trimmed."""
    for match in re.finditer(r"[^\n]+", text):
        line = match.group()
        stripped = line.strip().strip("\ufeff\u200b").strip()  # all Unicode spaces, BOM, zero-width
        if not stripped:
            continue
        start = match.start() + line.index(stripped)
        yield start, start + len(stripped)


def segment(document: Document, config: SegmentConfig | None = None) -> list[Paragraph]:
    """Paragraphs of `document` in reading order; also stored on `document.paragraphs`."""
    config = config or SegmentConfig()
    text = document.text
    lines = [
        (start, end, normalize(text[start:end]))
        for start, end in _lines(text)
    ]
    # nothing left after normalising (a lone U+2002, zero-width joiners): not a paragraph
    lines = [line for line in lines if has_text(line[2])]
    if config.drop_boilerplate:
        lines = [line for line in lines if not is_boilerplate(line[2]) and not _PAGE_NUMBER.match(line[2])]
        lines = _drop_licence_footer(lines)
    lines = _merge_wrapped(text, lines)

    paragraphs: list[Paragraph] = []
    headings: dict[int, str] = {}  # level -> heading text, the active heading path
    speaker: str | None = None

    def emit(start: int, end: int, kind: str, extra_heading: str | None = None) -> None:
        path = tuple(headings[level] for level in sorted(headings))
        if extra_heading:
            path = path + (extra_heading,)
        paragraphs.append(
            Paragraph(
                id=f"{document.id}#{len(paragraphs)}",
                doc_id=document.id,
                index=len(paragraphs),
                text=normalize(_join_breaks(text[start:end])),
                original=text[start:end],
                start=start,
                end=end,
                kind=kind,
                headings=path,
                speaker=speaker,
            )
        )

    for i, (start, end, norm) in enumerate(lines):
        next_norm = lines[i + 1][2] if i + 1 < len(lines) else ""
        is_first = not paragraphs
        short_plain = (
            len(norm) <= config.heading_max_chars and not _INNER_PUNCT.search(norm) and not _TERMINAL.search(norm)
        )

        who = speaker_of(norm)
        if who is not None:
            speaker, headings = who, {}
            emit(start, end, "speaker")
            continue
        level = heading_level(norm, config.heading_max_chars)
        if is_first and level is None and len(norm) <= config.heading_max_chars * 2 and not _TERMINAL.search(norm):
            emit(start, end, "title")
            continue
        if paragraphs and paragraphs[-1].kind == "title" and norm.startswith("——") and not _TERMINAL.search(norm):
            emit(start, end, "title")  # a "——subtitle" line under the title
            continue
        if level is None and short_plain and not norm.endswith((":", "：")) and len(next_norm) > config.heading_max_chars:
            level = UNNUMBERED_LEVEL  # a short bare line introducing a long paragraph
        if level is not None:
            headings = {lv: h for lv, h in headings.items() if lv < level}
            emit(start, end, "heading")
            headings[level] = norm
            continue

        inline = _inline_speaker(norm)
        if inline:
            speaker = inline
        run_in = _run_in_title(norm)
        chunks = _balanced_chunks(text[start:end], config.max_chars)
        for n, (chunk_start, chunk_end) in enumerate(chunks):
            piece = text[start + chunk_start : start + chunk_end]
            lead = len(piece) - len(piece.lstrip())
            trail = len(piece) - len(piece.rstrip())
            emit(start + chunk_start + lead, start + chunk_end - trail, "body", run_in if n else None)

    document.paragraphs = paragraphs
    if document.title is None:
        document.title = next((p.text for p in paragraphs if p.kind == "title"), None)
    return paragraphs
