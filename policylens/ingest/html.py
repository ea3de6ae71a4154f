"""Extract the article from a saved gov.cn / miit.gov.cn style HTML page.

Those pages wrap a few paragraphs of policy text in navigation, share bars,
font-size and print widgets; left in, that chrome becomes "paragraphs" the
tagger has to label. So: drop chrome, prefer the CMS content container, and
emit one line per block element.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import PreformattedString

from policylens.ingest.base import Extracted, IngestError
from policylens.ingest.encoding import decode_bytes

DROP_TAGS = ("script", "style", "noscript", "nav", "header", "footer", "aside", "form", "iframe",
             "button", "select", "input", "textarea", "svg", "template", "object", "embed", "head")
# Substrings of id/class that mark chrome (share bars, menus, font-size/print widgets).
WIDGET_WORDS = ("share", "nav", "menu", "footer", "breadcrumb", "crumb", "toolbar", "bdshare",
                "sidebar", "print", "fontsize", "font-size", "font_size", "gotop", "backtop", "qrcode")
# Content containers of the common gov.cn CMSs (TRS, UCAP), most specific first.
MAIN_KEYS = ("ucap-content", "pages_content", "article", "trs_editor", "con", "content", "zoom",
             "article-content")
BLOCK_TAGS = {"p", "div", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "table", "tbody",
              "thead", "tfoot", "section", "article", "main", "blockquote", "pre", "dl", "dt", "dd",
              "center", "hr", "figure", "figcaption", "caption", "address", "td", "th"}
_BLOCK_IN_CELL = ("p", "div", "br", "table", "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6")
# Lines made only of these (plus brackets/punctuation) are widget residue, e.g. "【字体：大 中 小】 打印".
BOILERPLATE_TOKENS = sorted((
    "分享到", "分享", "字体", "字體", "字号", "字號", "大", "中", "小", "打印本页", "打印本頁", "打印",
    "关闭窗口", "關閉窗口", "关闭", "關閉", "收藏本页", "收藏", "扫一扫在手机打开当前页",
    "掃一掃在手機打開當前頁", "回到顶部", "回到頂部", "返回顶部", "返回頂部", "我要纠错", "我要糾錯",
    "微信", "微博", "QQ空间", "默认", "默認", "保存", "背景色"), key=len, reverse=True)
_PUNCT_RE = re.compile(r"[\s【】\[\]()（）:：|｜/／·•>＞\-—_,，.。、]+")
_CJK = r"\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef"
_WRAP_RE = re.compile(rf"(?<=[{_CJK}])[ \t\r\f]*\n[ \t\r\n\f]*(?=[{_CJK}])")
_SPACE_RE = re.compile(r"[ \t\n\r\f\v\xa0]+")
_CHARSET_RE = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-]+)|<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9_\-]+)""", re.I)
_TITLE_SPLIT_RE = re.compile(r"\s*(?:_|\||｜|\s-\s|--)\s*")
_META_FIELDS = {"publishdate": "date", "pubdate": "date", "firstpublishedtime": "date",
                "article:published_time": "date", "contentsource": "content_source", "keywords": "keywords"}
_END = object()


def read_html(data: bytes, path: str | Path) -> Extracted:
    """Decode (honouring a declared charset only when strict decoding agrees) and extract the article."""
    match = _CHARSET_RE.search(data[:4096])
    hint = (match.group(1) or match.group(2)).decode("ascii") if match else None
    text, encoding = decode_bytes(data, path, hint=hint)
    soup = BeautifulSoup(text, "lxml")
    meta: dict[str, Any] = {"format": "html", "encoding": encoding}
    metas = _meta_tags(soup)
    for key, field in _META_FIELDS.items():
        if metas.get(key) and field not in meta:
            meta[field] = metas[key]
    page_title = _clean_title(soup.title.get_text(" ", strip=True)) if soup.title else None

    hidden = soup.find_all(style=re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I))
    for tag in [*soup.find_all(DROP_TAGS), *hidden]:
        if not tag.decomposed:
            tag.decompose()
    title = metas.get("articletitle") or _first_h1(soup) or page_title

    root = soup.body or soup
    half = len(root.get_text(strip=True)) / 2
    # A widget never holds most of the page: that is a "printContent"-style article wrapper.
    widgets = [tag for tag in soup.find_all(_is_widget) if len(tag.get_text(strip=True)) <= half]
    widget_ids = {id(tag) for tag in widgets}
    candidates = [tag for tag in _main_candidates(soup)
                  if not any(id(parent) in widget_ids for parent in tag.parents)]
    main = _pick_main(candidates) or _densest_block(root, widget_ids) or root
    keep = {id(main), *(id(parent) for parent in main.parents)}
    for tag in widgets:
        if not tag.decomposed and id(tag) not in keep:
            tag.decompose()
    lines = [line for line in _render(main) if not is_boilerplate_line(line)]
    if not lines:
        raise IngestError(path, "no text found in HTML page")
    if title and _squash(title) not in {_squash(line) for line in lines[:5]}:
        lines.insert(0, title)  # the text should carry its title even when the h1 sits outside the container
    return Extracted("\n".join(lines), title, meta)


def is_boilerplate_line(line: str) -> bool:
    """True for a short line made only of widget words: "分享到:", "【字体：大 中 小】 打印"."""
    if len(line) > 60:
        return False
    rest = _squash(line)
    if not rest:
        return True
    for token in BOILERPLATE_TOKENS:
        rest = rest.replace(token, "")
    return not _PUNCT_RE.sub("", rest)


def _squash(text: str) -> str:
    return _SPACE_RE.sub("", text).replace("\u3000", "")


def _meta_tags(soup: BeautifulSoup) -> dict[str, str]:
    found: dict[str, str] = {}
    for tag in soup.find_all("meta"):
        name = tag.get("name") or tag.get("property") or tag.get("http-equiv")
        content = tag.get("content")
        if isinstance(name, str) and isinstance(content, str) and content.strip():
            found.setdefault(name.strip().lower(), content.strip())
    return found


def _clean_title(title: str) -> str | None:
    """"关于…的通知_政策_中国政府网" -> "关于…的通知": the site name follows a separator."""
    parts = [part for part in _TITLE_SPLIT_RE.split(title) if part.strip()]
    return parts[0].strip() if parts else None


def _first_h1(soup: BeautifulSoup) -> str | None:
    for h1 in soup.find_all("h1"):
        text = _SPACE_RE.sub(" ", h1.get_text(" ", strip=True)).strip()
        if text:
            return text
    return None


def _attr_words(tag: Tag) -> list[str]:
    words = [tag.get("id") or ""]
    classes = tag.get("class") or []
    words.extend(classes if isinstance(classes, list) else [classes])
    return [str(word).lower() for word in words if word]


def _is_widget(tag: Tag) -> bool:
    if tag.name in ("html", "body"):
        return False
    return any(w in word for word in _attr_words(tag) for w in WIDGET_WORDS)


def _main_candidates(soup: BeautifulSoup) -> list[Tag]:
    return [tag for tag in soup.find_all(True)
            if tag.name == "article" or any(word in MAIN_KEYS for word in _attr_words(tag))]


def _pick_main(candidates: list[Tag]) -> Tag | None:
    """First key in MAIN_KEYS order that names a non-trivial element; the longest such element."""
    for key in MAIN_KEYS:
        matching = [tag for tag in candidates
                    if (key in _attr_words(tag) or (key == "article" and tag.name == "article"))]
        matching = [tag for tag in matching if len(tag.get_text(strip=True)) >= 20]
        if matching:
            return max(matching, key=lambda tag: len(tag.get_text(strip=True)))
    return None


def _densest_block(root: Tag, skip: set[int]) -> Tag | None:
    """The block whose own paragraphs hold the most text (readability-style fallback); widgets excluded."""
    best, best_score = None, 0
    for tag in root.find_all(("div", "td", "section", "main")):
        if id(tag) in skip or any(id(parent) in skip for parent in tag.parents):
            continue
        score = 0
        for child in tag.children:
            if isinstance(child, NavigableString) and not isinstance(child, PreformattedString):
                score += len(child.strip())
            elif isinstance(child, Tag) and child.name not in ("div", "table", "ul", "ol", "section", "dl"):
                score += len(child.get_text(strip=True))
        if score > best_score:
            best, best_score = tag, score
    return best if best_score >= 100 else None


def _collapse(text: str) -> str:
    """Source line wraps between Chinese characters are not spaces; other whitespace runs are one space."""
    return _SPACE_RE.sub(" ", _WRAP_RE.sub("", text))


def _flat_row(tr: Tag) -> str | None:
    """A table row of simple cells as one tab-joined line; None when a cell holds several paragraphs
    or a table (a layout table wrapping the article), whose blocks must stay separate lines."""
    cells = tr.find_all(("td", "th"), recursive=False)
    if not cells or any(cell.find("table") or len(cell.find_all(_BLOCK_IN_CELL, limit=2)) > 1 for cell in cells):
        return None
    return "\t".join(_collapse(cell.get_text(" ")).strip() for cell in cells).rstrip("\t")


def _render(root: Tag) -> list[str]:
    """One line per block element (iterative: deeply nested pages must not hit the recursion limit)."""
    out: list[str] = []
    stack: list[Any] = list(reversed(list(root.children)))
    while stack:
        item = stack.pop()
        if item is _END:
            out.append("\n")
        elif isinstance(item, NavigableString):
            if not isinstance(item, PreformattedString):  # comments, doctype, CDATA
                out.append(_collapse(str(item)))
        elif isinstance(item, Tag):
            if item.name == "br":
                out.append("\n")
                continue
            row = _flat_row(item) if item.name == "tr" else None
            if row is not None:
                out.append(f"\n{row}\n")
                continue
            if item.name in BLOCK_TAGS:
                out.append("\n")
                stack.append(_END)
            stack.extend(reversed(list(item.children)))
    lines = (_SPACE_RE.sub(" ", line).strip() if "\t" not in line else line.strip()
             for line in "".join(out).split("\n"))
    return [line for line in lines if line]
