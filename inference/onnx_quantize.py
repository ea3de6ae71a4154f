"""Static int8 quantisation of the exported tagger: calibration inputs, fp32 islands, smoothing.

Why static: every activation scale is a constant calibrated once on training
paragraphs, so a paragraph's scores never depend on its batch-mates (see
inference/onnx_backend.py's docstring for the measured trade-offs).
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from policylens.io import InputError
from policylens.tagger.model_dir import TaggerMeta

if TYPE_CHECKING:
    from inference.onnx_backend import ExportConfig


def has_vnni() -> bool:
    """Whether int8 MatMuls with full-range 8-bit weights are safe on this CPU.

    x86 without VNNI multiplies u8 x s8 pairs into saturating int16 sums (ORT's documented
    caveat), so there weights get 7 bits (reduce_range). ARM and VNNI x86 do not saturate.
    """
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return True
    try:
        flags = set(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split())
    except OSError:
        return False  # cannot tell: the safe choice
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


class _WindowReader:
    """Calibration inputs for quantize_static: each token window as its own batch of one (no padding).

    One window per batch means the recorded ranges are those of single windows, whatever
    grouping a caller later uses; the ranges are maxima over all windows, so the order of
    the windows does not matter either.
    """

    def __init__(self, windows: Sequence[Sequence[int]]) -> None:
        self._windows = list(windows)
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._windows):
            return None
        ids = np.asarray([self._windows[self._next]], dtype=np.int64)
        self._next += 1
        return {"input_ids": ids, "attention_mask": np.ones_like(ids)}

    def __len__(self) -> int:
        return len(self._windows)

    def rewind(self) -> None:
        self._next = 0


def sample_calibration_texts(texts: Sequence[str], size: int) -> list[str]:
    """`size` distinct non-blank texts chosen by a hash of each text: the same sample on every
    machine and run, whatever the order of `texts`."""
    from policylens.hashing import seeded_int

    distinct = {t for t in texts if isinstance(t, str) and t.strip()}
    return sorted(distinct, key=lambda t: (seeded_int(13, t), t))[:size]


def default_calibration_texts(size: int = 256) -> tuple[list[str], str]:
    """`size` training paragraphs for calibration, and where they came from.

    The training split of the data `policylens train` uses (seed annotations, plus the
    shared silver set when present), hash-sampled (sample_calibration_texts).
    """
    from policylens.dataset import (
        SplitConfig,
        default_sources,
        load_labelled,
        split_by_document,
    )
    from policylens.taxonomy import Taxonomy

    sources = default_sources(include_silver=True)
    rows = split_by_document(load_labelled(sources, Taxonomy.load()), SplitConfig())["train"]
    names = ", ".join(path.name for path in sources)
    return sample_calibration_texts([row["text"] for row in rows], size), f"train split of {names} (hash-sampled)"


def calibration_windows(model_dir: Path, texts: Sequence[str]) -> list[list[int]]:
    """The token windows a Predictor would feed for `texts` (same tokenizer, prefix, window and stride)."""
    from policylens.chinese import normalize
    from policylens.tagger.scoring import WindowTokenizer

    tokenizer = WindowTokenizer(model_dir, TaggerMeta.load(model_dir))
    unique = sorted({normalize(t) for t in texts if t and t.strip()})
    windows, _ = tokenizer(unique)
    return [list(w) for w in windows]


_ACTIVATION_OPS = ("Mul", "Erf", "Gelu", "FastGelu", "BiasGelu", "Relu", "Tanh", "Sigmoid")


def _nodes_kept_fp32(model_path: Path, config: ExportConfig) -> tuple[list[str], dict[str, int]]:
    """Names of the MatMuls to leave in fp32, and counts of what is quantised.

    - MatMuls of two activations (Q·Kᵀ, attention·V): no weight to quantise, and int8 there would
      put a fixed scale on attention scores and softmax probabilities;
    - unless `quantize_ffn_output`, the weight MatMuls fed by an activation function (the
      feed-forward output projection, after GELU).
    """
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    weights = {init.name for init in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    keep: list[str] = []
    counts = {"weight_matmuls": 0, "int8_matmuls": 0}
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        if not any(name in weights for name in node.input):
            keep.append(node.name)
            continue
        counts["weight_matmuls"] += 1
        source = producer.get(node.input[0])
        if not config.quantize_ffn_output and source is not None and source.op_type in _ACTIVATION_OPS:
            keep.append(node.name)
        else:
            counts["int8_matmuls"] += 1
    return keep, counts


def _smooth(model_path: Path, out: Path, windows: Sequence[Sequence[int]], skip: set[str], alpha: float) -> int:
    """SmoothQuant-style equalisation of the weight MatMuls not in `skip` (see ExportConfig.smooth_alpha).

    For each activation x feeding weight MatMuls W1..Wn: a = per-channel max |x| over the
    calibration windows (each alone), w = per-row max |W| over W1..Wn, s = a^alpha / w^(1-alpha);
    x is replaced by x * (1/s) (one Mul) and each Wi by diag(s) Wi. Exact in fp32. Returns the
    number of activations smoothed.
    """
    from collections import defaultdict

    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    model = onnx.load(str(model_path))
    weights = {init.name: init for init in model.graph.initializer}
    uses: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        for name in node.input:
            uses[name] += 1
    groups: dict[str, list] = defaultdict(list)
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.name not in skip and node.input[1] in weights and node.input[0] not in weights:
            groups[node.input[0]].append(node)
    # a weight also used elsewhere (tied) cannot be rescaled for this group alone
    groups = {x: nodes for x, nodes in groups.items()
              if all(uses[n.input[1]] == 1 and numpy_helper.to_array(weights[n.input[1]]).ndim == 2 for n in nodes)}
    if not groups:
        shutil.copyfile(model_path, out)
        return 0
    names = sorted(groups)
    # the same graph with the activations as extra outputs, run once per calibration window
    n_outputs = len(model.graph.output)
    model.graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in names)
    onnx.save(model, str(out))
    del model.graph.output[n_outputs:]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    amax: dict[str, np.ndarray] = {}
    reader = _WindowReader(windows)
    while (feed := reader.get_next()) is not None:
        for name, value in zip(names, session.run(names, feed)):
            row = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
            amax[name] = row if name not in amax else np.maximum(amax[name], row)
    del session
    inserted = {}
    for name in names:
        mats = [numpy_helper.to_array(weights[n.input[1]]) for n in groups[name]]
        wmax = np.max([np.abs(m).max(axis=1) for m in mats], axis=0)
        scale = np.clip(np.maximum(amax[name], 1e-5) ** alpha / np.maximum(wmax, 1e-5) ** (1 - alpha), 1e-4, 1e4)
        scale = scale.astype(np.float32)
        for node, matrix in zip(groups[name], mats):
            weights[node.input[1]].CopyFrom(numpy_helper.from_array((matrix * scale[:, None]).astype(np.float32),
                                                                    node.input[1]))
            node.input[0] = name + "_smoothed"
        model.graph.initializer.append(numpy_helper.from_array((1.0 / scale).astype(np.float32), name + "_smooth_inv"))
        inserted[name] = helper.make_node("Mul", [name, name + "_smooth_inv"], [name + "_smoothed"],
                                          name=name + "_SmoothMul")
    ordered = [inserted.pop(name) for name in list(inserted) if name in {i.name for i in model.graph.input}]
    for node in model.graph.node:
        ordered.append(node)
        ordered.extend(inserted.pop(out_name) for out_name in node.output if out_name in inserted)
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    onnx.save(model, str(out))
    return len(names)


def _quantize(model_dir: Path, fp32: Path, out: Path, config: ExportConfig,
              windows: Sequence[Sequence[int]]) -> dict[str, Any]:
    """Static int8 QDQ of the unfused graph, calibrated on `windows`; returns what was done."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not windows:
        raise InputError(f"{model_dir}: no calibration text to quantise with")
    prepared = fp32.with_name("model.prepared.onnx")
    smoothed = fp32.with_name("model.smoothed.onnx")
    reduce_range = (not has_vnni()) if config.reduce_range is None else config.reduce_range
    try:
        # ONNX shape inference + ORT's basic passes (constant folding), so the quantiser knows
        # every tensor's type. (Symbolic shape inference does not complete on this graph.)
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        keep, counts = _nodes_kept_fp32(prepared, config)
        counts["smoothed_inputs"] = (
            _smooth(prepared, smoothed, windows, set(keep), config.smooth_alpha) if config.smooth_alpha > 0 else 0
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(
                str(smoothed if counts["smoothed_inputs"] else prepared), str(out), _WindowReader(windows),
                quant_format=QuantFormat.QDQ,
                # the weight MatMuls, and the embedding Gathers (int8 tables: 4x less memory)
                op_types_to_quantize=["MatMul", "Gather"],
                nodes_to_exclude=keep,
                per_channel=config.per_channel,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8 if config.weight_type == "int8" else QuantType.QUInt8,
                calibrate_method=CalibrationMethod.MinMax,
                # MatMul outputs stay fp32 (ORT runs MatMulIntegerToFloat): quantising them too
                # added a uint8 rounding before every bias add (mean |Δp| 0.0037 -> 0.0023 without)
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                               "OpTypesToExcludeOutputQuantization": ["MatMul"]},
            )
    finally:
        prepared.unlink(missing_ok=True)
        smoothed.unlink(missing_ok=True)
    return {**counts, "reduce_range": reduce_range, "cpu_vnni": has_vnni()}
