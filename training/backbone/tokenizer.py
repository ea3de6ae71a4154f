"""The XLM-R SentencePiece unigram tokenizer, rebuilt from the pieces and normalisation map in the Q4 file."""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policylens.encoders.backbone import (
    BackboneError,
)

if TYPE_CHECKING:  # heavy imports stay lazy: the CLI must start fast
    from transformers import PreTrainedTokenizerFast

from training.backbone.q4 import _PLACEHOLDER_BASE, META, Q4Model


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
