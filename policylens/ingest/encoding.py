"""Detect the encoding of a text file instead of assuming UTF-8.

Chinese policy documents arrive as UTF-8, GBK/GB2312 (older gov sites, Windows
exports), UTF-16 (Notepad "Unicode"), sometimes Big5. A wrong guess does not
fail loudly, it yields mojibake that the taggers silently learn from, so every
step below decodes *strictly* and binary data is refused with a reason.
"""

from __future__ import annotations

import codecs
import unicodedata
from pathlib import Path

from policylens.ingest.base import IngestError

# Longest BOM first: the UTF-32 LE BOM starts with the UTF-16 LE one.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# Declared charsets that pages understate: GB2312/GBK pages routinely contain GBK-only
# characters, so decode them with the superset.
_SUPERSETS = {"gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "gb_2312-80": "gb18030",
              "big5": "big5hkscs", "iso-8859-1": "cp1252", "iso8859-1": "cp1252", "latin-1": "cp1252",
              "ascii": "utf-8", "us-ascii": "utf-8"}
_ALLOWED_CONTROLS = set("\t\n\r\f\v")
MAX_CONTROL_RATIO = 0.01


def decode_bytes(data: bytes, path: str | Path, hint: str | None = None) -> tuple[str, str]:
    """Return (text, encoding name); raise IngestError for empty, binary or undecodable data.

    Order: BOM, UTF-16 without BOM (NUL bytes), strict UTF-8, the declared `hint`
    (HTML meta charset), strict GB18030, charset-normalizer. The text has \\n newlines and no leading BOM.
    """
    if not data.strip():
        raise IngestError(path, "empty file")
    text, encoding = _detect(data, path, hint)
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise IngestError(path, "empty file")
    controls = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in _ALLOWED_CONTROLS)
    if controls > MAX_CONTROL_RATIO * len(text):
        raise IngestError(path, f"binary file ({controls} control characters in {len(text)})")
    return text, encoding


def _detect(data: bytes, path: str | Path, hint: str | None) -> tuple[str, str]:
    for bom, name in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(name), name
            except UnicodeDecodeError:
                raise IngestError(path, f"cannot decode: starts with a {name} BOM but is not valid {name}") from None
    if b"\x00" in data:
        guess = _utf16_without_bom(data)
        if guess is None:
            raise IngestError(path, "binary file (contains NUL bytes)")
        return guess
    # Valid UTF-8 is a strong signal on its own, stronger than a page's (often stale) charset.
    for name in ("utf-8", _canonical(hint) if hint else ""):
        decoded = _try(data, name)
        if decoded is not None:
            return decoded
    decoded = _try(data, "gb18030")
    if decoded is not None:
        return _prefer_big5(data, decoded)
    return _charset_normalizer_guess(data, path)


def _canonical(name: str) -> str:
    """Map a declared charset to the Python codec to use; unknown names map to ''."""
    name = name.strip().lower()
    if name in _SUPERSETS:
        return _SUPERSETS[name]
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        return ""
    return _SUPERSETS.get(codec, codec)


def _try(data: bytes, name: str) -> tuple[str, str] | None:
    if not name:
        return None
    try:
        return data.decode(name), name
    except (UnicodeDecodeError, LookupError):
        return None


def _plausible_ratio(text: str) -> float:
    """Share of characters a Chinese/English document is made of (catches wrong UTF-16 byte order)."""
    if not text:
        return 0.0
    good = 0
    for ch in text:
        o = ord(ch)
        if (0x20 <= o < 0x7F or ch in "\t\n\r\f" or 0xA0 <= o <= 0xFF or 0x2000 <= o <= 0x206F
                or 0x3000 <= o <= 0x303F or 0x3400 <= o <= 0x4DBF or 0x4E00 <= o <= 0x9FFF
                or 0xFF00 <= o <= 0xFFEF or 0x2460 <= o <= 0x24FF):
            good += 1
    return good / len(text)


def _utf16_without_bom(data: bytes) -> tuple[str, str] | None:
    """UTF-16 without BOM: NULs are the high bytes of ASCII; choose the byte order that reads as text.

    Chinese UTF-16 has few NULs (only ASCII and chars like U+4E00 "一" carry one), so the
    byte order is chosen by how plausible the decoded characters are, not by NUL positions alone.
    """
    if len(data) % 2:
        return None
    best: tuple[float, str, str] | None = None
    for name in ("utf-16-le", "utf-16-be"):
        decoded = _try(data, name)
        if decoded is None:
            continue
        score = _plausible_ratio(decoded[0])
        if best is None or score > best[0]:
            best = (score, decoded[0], name)
    if best is None or best[0] < 0.9:
        return None
    return best[1], best[2]


def _prefer_big5(data: bytes, gb: tuple[str, str]) -> tuple[str, str]:
    """Big5 bytes are almost always valid GB18030 too (as nonsense); break the tie by content."""
    try:
        data.decode("big5hkscs")
    except UnicodeDecodeError:
        return gb
    from charset_normalizer import from_bytes

    best = from_bytes(data, cp_isolation=["gb18030", "big5"]).best()
    if best is not None and best.encoding == "big5":
        return data.decode("big5hkscs"), "big5hkscs"
    return gb


def _charset_normalizer_guess(data: bytes, path: str | Path) -> tuple[str, str]:
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None or best.encoding is None:
        raise IngestError(path, "cannot decode: not UTF-8, GB18030 or UTF-16")
    try:
        return data.decode(best.encoding), best.encoding
    except (UnicodeDecodeError, LookupError):
        raise IngestError(path, "cannot decode: not UTF-8, GB18030 or UTF-16") from None
