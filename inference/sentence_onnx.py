"""Export the summariser's sentence encoder: frozen e5 -> mean pool -> L2 norm, as static int8 ONNX.

Why: summaries must not double the cost of `policylens tag`. The export uses the
tagger's int8 recipe (inference/onnx_quantize.py: static QDQ, calibrated
activation scales, SmoothQuant-style equalisation), so embeddings are
deterministic and batch-independent, and keeps only the lower `layers` of the
12. Encoding the ~19,000 distinct sentences of the 200-document timing set
(benchmarks/bench_tag_summary.py), 2 threads, extrapolated from 3,000 of them:
  12 layers, FFN output fp32 (the tagger's setting)   ~260 s
  12 layers, all weight MatMuls int8                  ~225 s
   6 layers, all int8 (the default)                    ~87 s
   4 layers, all int8                                  ~60 s
against ~360 s for an int8 12-layer pass over the same documents' paragraphs. The
cross-validated policy ROUGE of 6 and 12 layers is the same within noise (README).
The scorer is trained on these same embeddings (policylens train-summarizer exports
first).

The runtime side (no torch) is policylens/summarizer/encoder.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from inference.onnx_backend import ExportConfig
from inference.onnx_quantize import _quantize, sample_calibration_texts
from policylens.encoders.backbone import resolve_backbone
from policylens.encoders.e5 import PASSAGE_PREFIX, QUERY_PREFIX
from policylens.io import InputError, publish_dir, temp_dir_beside, write_json
from policylens.summarizer.encoder import (
    EXPORT_FILE,
    EXPORT_FORMAT,
    MODEL_FILE,
    SENTENCE_ENCODER_DIR,
    TOKENIZER_FILE,
    is_exported,
    read_export_info,
)


@dataclass(frozen=True)
class SentenceExportConfig:
    """How the sentence encoder is cut and quantised (all of it goes into the fingerprint)."""

    layers: int = 6  # lower transformer layers kept (e5-small has 12)
    max_length: int = 128  # tokens per sentence, prefix and <s> </s> included
    quantize_ffn_output: bool = True  # int8 for every weight MatMul (the tagger keeps FFN outputs fp32)
    smooth_alpha: float = 0.5
    calibration_size: int = 256  # sentences whose activation ranges fix the int8 scales
    opset: int = 17

    def __post_init__(self) -> None:
        if not 1 <= self.layers <= 48:
            raise ValueError(f"layers must be in 1..48, got {self.layers}")
        if not 8 <= self.max_length <= 512:
            raise ValueError(f"max_length must be in 8..512, got {self.max_length}")
        if self.calibration_size < 1:
            raise ValueError(f"calibration_size must be >= 1, got {self.calibration_size}")


def default_calibration_sentences(size: int = 256) -> list[str]:
    """Sentences of the repository's own seed documents and seed annotations, hash-sampled:
    always present, the same on every machine, and policy prose like what is summarised."""
    from policylens.document import Document
    from policylens.io import read_jsonl
    from policylens.paths import SEED_ANNOTATIONS_PATH, SEEDS_DIR
    from policylens.summarizer.units import sentence_units

    texts: list[str] = []
    for path in sorted(SEEDS_DIR.glob("*.txt")):
        texts += [u.text for u in sentence_units(Document(id=path.stem, text=path.read_text(encoding="utf-8")))]
    if SEED_ANNOTATIONS_PATH.exists():
        for _, row in read_jsonl(SEED_ANNOTATIONS_PATH):
            if isinstance(row.get("text"), str):
                texts += [u.text for u in sentence_units(Document(id="seed", text=row["text"]))]
    return sample_calibration_texts(texts, size)


def _backbone_stamp(backbone_dir: Path) -> str:
    """What identifies the backbone's weights (its provenance sha, else size and mtime)."""
    provenance = backbone_dir / "provenance.json"
    if provenance.exists():
        source = json.loads(provenance.read_text(encoding="utf-8")).get("source", {})
        if source.get("sha256"):
            return f"sha256:{source['sha256']}"
    weights = backbone_dir / "model.safetensors"
    return f"{weights.stat().st_size}:{int(weights.stat().st_mtime)}" if weights.exists() else str(backbone_dir)


def expected_fingerprint(backbone: str | Path | None, config: SentenceExportConfig,
                         calibration: Sequence[str]) -> str:
    stamp = {"backbone": _backbone_stamp(Path(resolve_backbone(backbone))), "config": asdict(config),
             "calibration": hashlib.sha256("\n".join(calibration).encode()).hexdigest()[:16],
             "prefix": PASSAGE_PREFIX, "format": EXPORT_FORMAT}
    return hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:16]


def _trace(backbone_dir: Path, path: Path, config: SentenceExportConfig) -> int:
    """fp32 graph: input_ids, attention_mask -> embedding (masked mean of the top kept layer, L2-normalised)."""
    import torch
    from transformers import AutoModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModel.from_pretrained(backbone_dir, use_safetensors=True, add_pooling_layer=False,
                                          attn_implementation="eager", num_hidden_layers=config.layers)

    class Pooled(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return torch.nn.functional.normalize(pooled, dim=-1)

    wrapper = Pooled(model).eval()
    ids = torch.full((2, 16), 5, dtype=torch.long)
    mask = torch.ones((2, 16), dtype=torch.long)
    mask[1, 9:] = 0  # a padded row, so no "all ones" shortcut is traced into the graph
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, (ids, mask), str(path), dynamo=False, opset_version=config.opset,
            input_names=["input_ids", "attention_mask"], output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                          "embedding": {0: "batch"}},
            do_constant_folding=True,
        )
    return int(model.config.hidden_size)


def export_sentence_encoder(out_dir: str | Path = SENTENCE_ENCODER_DIR, *, backbone: str | Path | None = None,
                            config: SentenceExportConfig | None = None,
                            calibration: Sequence[str] | None = None) -> Path:
    """Export, quantise and publish the encoder into `out_dir` (written beside it, then swapped in)."""
    from tokenizers import Tokenizer

    config = config or SentenceExportConfig()
    backbone_dir = Path(resolve_backbone(backbone))
    if not (backbone_dir / TOKENIZER_FILE).exists():
        raise InputError(f"{backbone_dir}: no {TOKENIZER_FILE}; the sentence encoder needs the fast tokenizer")
    calibration = list(calibration) if calibration is not None else default_calibration_sentences(config.calibration_size)
    if not calibration:
        raise InputError("no calibration sentences to quantise the sentence encoder with")
    started = time.time()
    tokenizer = Tokenizer.from_file(str(backbone_dir / TOKENIZER_FILE))
    tokenizer.no_padding()
    tokenizer.enable_truncation(config.max_length)
    windows = [e.ids for e in tokenizer.encode_batch([PASSAGE_PREFIX + t for t in calibration])]
    out_dir = Path(out_dir)
    tmp = temp_dir_beside(out_dir)
    try:
        dim = _trace(backbone_dir, tmp / "model.onnx", config)
        quantized = _quantize(backbone_dir, tmp / "model.onnx", tmp / MODEL_FILE,
                              ExportConfig(opset=config.opset, quantize_ffn_output=config.quantize_ffn_output,
                                           smooth_alpha=config.smooth_alpha,
                                           calibration_size=len(calibration)), windows)
        (tmp / "model.onnx").unlink()
        shutil.copyfile(backbone_dir / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
        pad_id = tokenizer.token_to_id("<pad>")
        write_json(tmp / EXPORT_FILE, {
            "format": EXPORT_FORMAT,
            "fingerprint": expected_fingerprint(backbone_dir, config, calibration),
            "backbone": str(backbone_dir), "backbone_stamp": _backbone_stamp(backbone_dir),
            "config": asdict(config), "dim": dim, "max_length": config.max_length,
            "prefix": PASSAGE_PREFIX, "query_prefix": QUERY_PREFIX, "pad_id": 1 if pad_id is None else pad_id,
            "output": "mean-pooled, L2-normalised last kept layer",
            "quantization": {"scheme": "static int8 QDQ (inference/onnx_quantize.py)", **quantized},
            "calibration": {"sentences": len(calibration), "method": "minmax, each sentence alone",
                            "sha256": hashlib.sha256("\n".join(calibration).encode()).hexdigest()[:16]},
            "seconds": round(time.time() - started, 1),
        })
        publish_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def ensure_sentence_encoder(out_dir: str | Path = SENTENCE_ENCODER_DIR, *, backbone: str | Path | None = None,
                            config: SentenceExportConfig | None = None, log: Any = print) -> Path:
    """The exported encoder in `out_dir`, (re-)exported first when missing or made from other
    weights or settings (about half a minute)."""
    config = config or SentenceExportConfig()
    out_dir = Path(out_dir)
    calibration = default_calibration_sentences(config.calibration_size)
    wanted = expected_fingerprint(backbone, config, calibration)
    if is_exported(out_dir) and read_export_info(out_dir).get("fingerprint") == wanted:
        return out_dir
    log(f"exporting the int8 sentence encoder ({config.layers} layers) to {out_dir}")
    return export_sentence_encoder(out_dir, backbone=backbone, config=config, calibration=calibration)
