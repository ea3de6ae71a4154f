"""ONNX Runtime backend: export the tagger once, quantise it to int8, serve it without torch.

Why: on CPU an int8 encoder runs ~2-3x faster than fp32 torch and needs a
fraction of the memory (the 250k-token embedding matrix alone is 384 MB in fp32,
96 MB in int8), and the serving process never imports torch.

Deterministic by construction: the int8 model is quantised *statically*
(quantize_static, QDQ format). Every activation scale is a constant calibrated
once, at export, on training paragraphs, so a paragraph's scores depend only on
the paragraph: not on which other paragraphs share its batch, how much padding
the batch adds, the engine, or the server's load. (quantize_dynamic, used before,
computed activation scales per batch tensor at run time, and moved a probability
by up to 0.19 between batch sizes.) Calibration feeds each token window as its own
batch of one, so the ranges cannot depend on how windows were grouped either.
Only the weight MatMuls (attention projections, feed-forward input) and the embedding
Gathers are int8; the feed-forward output projection (its GELU input has outlier
channels no single scale resolves), the attention mask, softmax and layer norms stay
fp32, so a padded position can never leak into a real one. A SmoothQuant-style
per-channel rescaling, fixed at export, keeps layer-norm outliers from coarsening
the int8 scales. Measured: ExportConfig's comment.

Files, inside the model directory (git-ignored like all weights):
  onnx/model.onnx       fp32 export (dynamic batch and sequence axes, opset 17)
  onnx/model.int8.onnx  the same, unfused, with static int8 QDQ quantisation (ORT fuses it at load)
  onnx/export.json      which model version / settings / calibration produced them
  onnx/accuracy.json    torch vs onnx on held-out data (`policylens train`, `export-onnx --evaluate`)

    policylens export-onnx [--model DIR] [--default] [--evaluate]
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inference.onnx_quantize import (
    _quantize,
    calibration_windows,
    default_calibration_texts,
    sample_calibration_texts,
)
from policylens.io import InputError, publish_dir, temp_dir_beside, write_json
from policylens.metrics.multilabel import macro_f1
from policylens.tagger.model_dir import TaggerMeta

ONNX_DIR = "onnx"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
EXPORT_INFO = "export.json"
ACCURACY_INFO = "accuracy.json"
# Bumped when the int8 scheme changes: an export of another format is stale and redone.
# 2: static QDQ with calibrated activation scales (1, unrecorded: quantize_dynamic).
QUANT_FORMAT = 2


@dataclass(frozen=True)
class ExportConfig:
    """How the tagger is exported.

    The graph is quantised unfused: ORT's Python transformer fusions (Attention,
    SkipLayerNormalization, BiasGelu: com.microsoft ops) defeat the quantiser's type
    inference, so after them 33 of the 72 weight MatMuls of e5-small were silently left
    fp32, and the fused Attention op has no QDQ form at all. ONNX Runtime applies its own
    fusions (layer norm, gelu, int8 MatMul) when it loads the QDQ graph.
    """

    opset: int = 17
    quantize: bool = True
    # Measured on a tagger trained (1 epoch) on seeds + silver, on its dev split (636 paragraphs) vs
    # torch; para/s: the bare ONNX scorer on 400 test paragraphs, 2 threads, run side by side:
    #   int8 scheme                                  Δ macro-F1  mean|Δp|  max|Δp|  agree  batch 1 vs 8  para/s
    #   quantize_dynamic, fused (before)               -0.031     0.014    0.43    98.9%   max|Δp| 0.23    173
    #   static, every weight MatMul (smoothed, 8-bit)  -0.045     0.012    0.39    98.7%         0        ~170
    #   static, FFN output fp32, 7-bit, int8 outputs   -0.021     0.009    0.49    99.3%         0           -
    #   static, FFN output fp32, 8-bit, smoothed,
    #     fp32 MatMul outputs (the default)            -0.007     0.002    0.10    99.8%         0         113
    #   fp32 ONNX                                        0          0        0     100%          0          84
    per_channel: bool = True
    # None: 7-bit weights only on x86 CPUs without VNNI (see has_vnni: full-range int8 can saturate
    # the u8s8 kernels there); full 8-bit elsewhere, which is markedly more accurate (7-bit weights
    # alone cost -0.005 test macro-F1 on the silver-trained tagger, 8-bit +0.001).
    reduce_range: bool | None = None
    weight_type: str = "int8"  # "int8" (QInt8) or "uint8" (QUInt8)
    # Static activation quantisation: uint8 activations (the u8s8 kernels of x86), MinMax ranges
    # from `calibration_size` training paragraphs (sampled deterministically), each window alone.
    # (Percentile ranges were no better: the large activations of BERT are few channels that
    # matter, and clipping them cost accuracy.)
    calibration_size: int = 256
    # The feed-forward output projection reads the GELU output, whose few outlier channels one
    # per-tensor int8 scale cannot resolve: quantising it was most of the int8 error (mean |Δp|
    # 0.024 -> 0.006 without it on a seed-trained e5 tagger). False keeps it fp32 (about 1/3 of
    # the MatMul work); True quantises it too (faster, less accurate).
    quantize_ffn_output: bool = False
    # SmoothQuant-style equalisation before quantising (0: off): each quantised MatMul's input
    # is divided per channel by s = max|x|^a / max|w|^(1-a) and its weight rows multiplied by s
    # (exact in fp32), so the outlier channels of the layer-norm outputs no longer set the int8
    # scale of every channel. Halved the int8 error on a silver-trained tagger (mean |Δp| 0.009 ->
    # 0.004, labels agree 99.1% -> 99.7%). The factors come from the calibration windows.
    smooth_alpha: float = 0.5

    def __post_init__(self) -> None:
        if self.weight_type not in ("int8", "uint8"):
            raise ValueError(f"weight_type must be int8 or uint8, got {self.weight_type!r}")
        if not 0 <= self.smooth_alpha <= 1:
            raise ValueError(f"smooth_alpha must be in [0, 1], got {self.smooth_alpha}")
        if self.calibration_size < 1:
            raise ValueError(f"calibration_size must be >= 1, got {self.calibration_size}")
        if not 14 <= self.opset <= 21:
            raise ValueError(f"opset must be in 14..21 (scaled_dot_product export needs >= 14), got {self.opset}")


def onnx_path(model_dir: str | Path, quantized: bool = True) -> Path:
    return Path(model_dir) / ONNX_DIR / (INT8_FILE if quantized else FP32_FILE)


def _version(model_dir: Path) -> str:
    from policylens.tagger.model_dir import model_version

    return model_version(model_dir, TaggerMeta.load(model_dir))


def export_info(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / ONNX_DIR / EXPORT_INFO
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def is_current(model_dir: str | Path, quantized: bool = True) -> bool:
    """The ONNX file exists, was exported from the weights now in the directory, and (int8) in today's format."""
    model_dir = Path(model_dir)
    info = export_info(model_dir)
    if not onnx_path(model_dir, quantized).exists() or info.get("model_version") != _version(model_dir):
        return False
    return not quantized or info.get("quant_format") == QUANT_FORMAT


def _trace_to_onnx(model_dir: Path, path: Path, opset: int) -> None:
    """The fp32 graph with dynamic batch and sequence axes."""
    import torch
    from transformers import AutoModelForSequenceClassification

    # eager attention exports to plain MatMul/Softmax, which ORT's fusions recognise
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True, attn_implementation="eager")

    class Logits(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    wrapper = Logits(model).eval()  # the exporter restores the wrapper's mode afterwards: keep it eval
    ids = torch.full((2, 16), 5, dtype=torch.long)
    mask = torch.ones((2, 16), dtype=torch.long)
    mask[1, 9:] = 0  # trace a padded row so no "all ones" shortcut is baked into the graph
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (ids, mask),
            str(path),
            dynamo=False,  # the TorchScript exporter needs no onnxscript and handles dynamic axes directly
            opset_version=opset,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "logits": {0: "batch"},
            },
            do_constant_folding=True,
        )


def export_onnx(model_dir: str | Path, config: ExportConfig | None = None, *,
                calibration_texts: Sequence[str] | None = None) -> Path:
    """Export (and quantise) the tagger into `model_dir/onnx/`; returns the file a Predictor loads.

    calibration_texts: paragraphs whose activation ranges fix the int8 scales (training
    paragraphs; the first `config.calibration_size` are used); None: a deterministic sample
    of the training split `policylens train` uses (see default_calibration_texts).
    Written into a temp folder and swapped in, so a concurrent reader never sees
    half a model.
    """
    import torch

    config = config or ExportConfig()
    model_dir = Path(model_dir)
    if not (model_dir / "model.safetensors").exists():
        raise InputError(f"{model_dir}: no model.safetensors to export")
    started = time.time()
    info: dict[str, Any] = {"model_version": _version(model_dir), "config": asdict(config)}
    windows: list[list[int]] = []
    if config.quantize:
        if calibration_texts is None:
            texts, source = default_calibration_texts(config.calibration_size)
        else:
            texts = sample_calibration_texts(calibration_texts, config.calibration_size)
            source = f"calibration_texts argument ({len(calibration_texts)} texts, hash-sampled)"
        windows = calibration_windows(model_dir, texts)
        info["quant_format"] = QUANT_FORMAT
        info["quantization"] = "static int8 QDQ (activation scales fixed at export: scores do not depend on the batch)"
        info["calibration"] = {
            "method": "minmax", "source": source, "paragraphs": len(texts),
            "windows": len(windows), "batch": "each window alone (batch of 1, no padding)",
        }
    tmp = temp_dir_beside(model_dir / ONNX_DIR)
    try:
        _trace_to_onnx(model_dir, tmp / FP32_FILE, config.opset)
        done = _quantize(model_dir, tmp / FP32_FILE, tmp / INT8_FILE, config, windows) if config.quantize else {}
        write_json(tmp / EXPORT_INFO, {
            **info,
            **({"quantized": done} if done else {}),
            "fused": False,  # ORT fuses at load time; see ExportConfig
            "torch": torch.__version__,
            "seconds": round(time.time() - started, 1),
        })
        publish_dir(tmp, model_dir / ONNX_DIR)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return onnx_path(model_dir, config.quantize)


class OnnxScorer:
    """An ONNX Runtime session as a Scorer (see inference.predictor.Scorer)."""

    def __init__(self, path: str | Path, num_threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self.session.get_inputs()}

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": mask}
        return self.session.run(["logits"], {k: v for k, v in feed.items() if k in self._inputs})[0]


def load_onnx_scorer(
    model_dir: str | Path, *, num_threads: int = 1, quantized: bool = True, auto_export: bool = True
) -> OnnxScorer:
    """The model's ONNX scorer; exports it first (once, into the model dir) when missing or stale."""
    model_dir = Path(model_dir)
    path = onnx_path(model_dir, quantized)
    if not is_current(model_dir, quantized):
        if not auto_export:
            raise InputError(f"{path}: missing or stale; run `policylens export-onnx --model {model_dir}`")
        print(f"policylens: exporting {model_dir} to ONNX (once; saved in {path.parent})", file=sys.stderr)
        export_onnx(model_dir, ExportConfig(quantize=quantized))
    return OnnxScorer(path, num_threads=num_threads)


def compare_backends(model_dir: str | Path, texts: list[str], targets: np.ndarray | None = None,
                     num_threads: int | None = None) -> dict[str, Any]:
    """Score `texts` with both backends: max/mean |Δprob|, label agreement, macro-F1 of each when targets are given."""
    from inference.predictor import Predictor

    result: dict[str, Any] = {"n": len(texts)}
    probs = {}
    for backend in ("torch", "onnx"):
        predictor = Predictor(model_dir, backend=backend, num_threads=num_threads, summarizer=None)
        started = time.time()
        probs[backend] = predictor.predict_proba(texts)
        result[f"{backend}_seconds"] = round(time.time() - started, 2)
        thresholds = predictor._thresholds
        if targets is not None:
            predicted = (probs[backend] >= thresholds).astype(int)
            result[f"{backend}_macro_f1"] = round(macro_f1(targets, predicted), 4)
    diff = np.abs(probs["torch"] - probs["onnx"])
    result["max_abs_diff"] = float(diff.max()) if diff.size else 0.0
    result["mean_abs_diff"] = float(diff.mean()) if diff.size else 0.0
    agree = (probs["torch"] >= thresholds) == (probs["onnx"] >= thresholds)
    result["label_agreement"] = float(agree.mean()) if agree.size else 1.0
    if targets is not None:
        result["delta_macro_f1"] = round(result["onnx_macro_f1"] - result["torch_macro_f1"], 4)
    return result


def choose_default_backend(
    model_dir: str | Path, texts: Sequence[str], targets: np.ndarray, *, tolerance: float = 0.01,
    data: str = "dev split", num_threads: int | None = None,
) -> dict[str, Any]:
    """Make onnx the model's default backend when its int8 export agrees with torch on `texts`.

    Agreement: macro-F1 of the two backends (the model's own thresholds) within `tolerance`.
    Otherwise the default stays torch. Either way the comparison and the decision are written
    to onnx/accuracy.json and returned ("backend", "reason" and compare_backends' numbers).
    """
    from policylens.tagger.model_dir import set_default_backend

    model_dir = Path(model_dir)
    report: dict[str, Any] = {"data": data, "rule": f"|onnx macro-F1 - torch macro-F1| <= {tolerance}"}
    if not len(texts):
        report.update(backend="torch", reason=f"no {data} rows to compare the backends on; kept torch")
    else:
        report.update(compare_backends(model_dir, list(texts), np.asarray(targets, dtype=int), num_threads=num_threads))
        delta = report["delta_macro_f1"]
        if abs(delta) <= tolerance + 1e-9:
            report.update(backend="onnx", reason=(
                f"int8 onnx agrees with torch on the {data} (macro-F1 {report['onnx_macro_f1']:.4f} vs "
                f"{report['torch_macro_f1']:.4f}, labels agree {report['label_agreement']:.1%})"))
        else:
            report.update(backend="torch", reason=(
                f"int8 onnx macro-F1 {report['onnx_macro_f1']:.4f} vs torch {report['torch_macro_f1']:.4f} on the "
                f"{data} ({delta:+.4f}, beyond {tolerance}); kept torch"))
    report["export"] = export_info(model_dir)
    write_json(model_dir / ONNX_DIR / ACCURACY_INFO, report)
    set_default_backend(model_dir, report["backend"])
    return report


def load_test_split() -> tuple[list[str], np.ndarray]:
    """Texts and multi-hot targets of the test split, exactly as `policylens train` splits."""
    from policylens.dataset import (
        SplitConfig,
        default_sources,
        load_labelled,
        split_by_document,
    )
    from policylens.taxonomy import Taxonomy

    taxonomy = Taxonomy.load()
    rows = load_labelled(default_sources(include_silver=True), taxonomy)
    test = split_by_document(rows, SplitConfig(dev=0.1, test=0.15, seed=13))["test"]
    return [r["text"] for r in test], np.asarray([taxonomy.multi_hot(r["labels"]) for r in test], dtype=int)
