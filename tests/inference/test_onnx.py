"""ONNX backend: the export agrees with torch (tightly in fp32, loosely in int8), its int8 model is
statically quantised (calibrated, batch-independent), and it is selectable per model, by hand or by
`policylens train` when it agrees with torch on the dev split."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from inference.onnx_backend import (
    ACCURACY_INFO,
    ONNX_DIR,
    QUANT_FORMAT,
    ExportConfig,
    OnnxScorer,
    choose_default_backend,
    export_info,
    export_onnx,
    is_current,
    load_onnx_scorer,
    onnx_path,
    sample_calibration_texts,
)
from inference.predictor import Predictor
from policylens.tagger.model_dir import set_default_backend
from policylens.tagger.scoring import TorchScorer

TEXTS = [
    "加快推进5G网络和数据中心等新型基础设施建设，扩大工业互联网平台应用规模。",
    "培育一批专精特新中小企业，优化营商环境降低企业融资成本。",
    "实施绿色制造工程推动节能降碳。",
    "一、总体要求",
    "支持集成电路产业高质量发展，建设国家级先进制造业集群。" * 8,
]


@pytest.fixture(scope="module")
def onnx_tagger_dir(tiny_tagger_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny tagger with its ONNX export (fp32 + int8), made once."""
    model_dir = tmp_path_factory.mktemp("onnx") / "tagger"
    shutil.copytree(tiny_tagger_dir, model_dir)
    export_onnx(model_dir, ExportConfig())
    return model_dir


def test_export_writes_both_models(onnx_tagger_dir: Path) -> None:
    assert onnx_path(onnx_tagger_dir, quantized=False).exists()
    assert onnx_path(onnx_tagger_dir).exists()
    info = export_info(onnx_tagger_dir)
    assert info["model_version"] == "tiny-test" and info["config"]["opset"] == 17
    assert info["quant_format"] == QUANT_FORMAT and info["calibration"]["windows"] > 0
    assert is_current(onnx_tagger_dir)
    assert not any(p.name.startswith(".onnx") for p in onnx_tagger_dir.iterdir())  # no temp dirs left behind


def test_fp32_export_matches_torch_with_dynamic_shapes(onnx_tagger_dir: Path) -> None:
    torch_predictor = Predictor(onnx_tagger_dir, backend="torch", num_threads=1, summarizer=None)
    fp32 = OnnxScorer(onnx_path(onnx_tagger_dir, quantized=False))
    torch_scorer = TorchScorer(torch_predictor.model)
    rng = np.random.default_rng(0)
    for batch, length in [(1, 5), (3, 17), (8, 32)]:  # none of these is the traced (2, 16)
        ids = rng.integers(5, 200, size=(batch, length))
        mask = np.ones_like(ids)
        mask[0, length // 2 :] = 0  # a padded row
        np.testing.assert_allclose(fp32(ids, mask), torch_scorer(ids, mask), atol=1e-4)


def test_int8_predictor_close_to_torch(onnx_tagger_dir: Path) -> None:
    torch_probs = Predictor(onnx_tagger_dir, backend="torch", num_threads=1, summarizer=None).predict_proba(TEXTS)
    onnx_predictor = Predictor(onnx_tagger_dir, backend="onnx", num_threads=1, summarizer=None)
    onnx_probs = onnx_predictor.predict_proba(TEXTS)
    # int8 weights and statically quantised activations: looser than fp32. The tiny random
    # tagger (large weights, hidden size 32) is a harsh case; the real one is compared on its
    # dev split by `policylens train` (onnx/accuracy.json) or `policylens export-onnx --evaluate`.
    diff = np.abs(onnx_probs - torch_probs)
    assert diff.max() < 0.15 and diff.mean() < 0.03
    assert onnx_predictor.backend == "onnx" and not hasattr(onnx_predictor, "model")


def test_backend_chosen_by_model_setting(onnx_tagger_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "tagger"
    shutil.copytree(onnx_tagger_dir, model_dir)
    assert Predictor(model_dir, summarizer=None, num_threads=1).backend == "torch"
    set_default_backend(model_dir, "onnx")
    assert json.loads((model_dir / "policylens.json").read_text())["inference"] == {"backend": "onnx"}
    assert Predictor(model_dir, summarizer=None, num_threads=1).backend == "onnx"
    assert Predictor(model_dir, backend="torch", summarizer=None, num_threads=1).backend == "torch"  # explicit wins


def test_stale_export_is_detected(onnx_tagger_dir: Path, tmp_path: Path) -> None:
    from policylens.tagger.model_dir import TaggerMeta

    model_dir = tmp_path / "tagger"
    shutil.copytree(onnx_tagger_dir, model_dir)
    meta = TaggerMeta.load(model_dir)
    meta.version = "retrained"
    meta.save(model_dir)
    assert not is_current(model_dir)
    with pytest.raises(Exception, match="stale"):
        load_onnx_scorer(model_dir, auto_export=False)


def test_onnx_predictor_never_imports_torch(onnx_tagger_dir: Path) -> None:
    code = (
        "import sys; from inference.predictor import Predictor; "
        f"p = Predictor({str(onnx_tagger_dir)!r}, backend='onnx', num_threads=1, summarizer=None); "
        "p.predict(['实施绿色制造工程推动节能降碳。']); print('torch' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                            env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_int8_graph_is_static_qdq(onnx_tagger_dir: Path) -> None:
    """No run-time (per batch) activation scales anywhere; the weight MatMuls run in int8."""
    import onnx

    model = onnx.load(str(onnx_path(onnx_tagger_dir)), load_external_data=False)
    ops = {node.op_type for node in model.graph.node}
    assert not ops & {"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulInteger"}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    quantized = export_info(onnx_tagger_dir)["quantized"]
    assert 0 < quantized["int8_matmuls"] < quantized["weight_matmuls"]  # the feed-forward outputs stay fp32


def test_a_dynamic_export_is_stale(onnx_tagger_dir: Path, tmp_path: Path) -> None:
    """An int8 model exported before static quantisation (no quant_format) is redone, not served."""
    model_dir = tmp_path / "tagger"
    shutil.copytree(onnx_tagger_dir, model_dir)
    info_path = model_dir / ONNX_DIR / "export.json"
    info = json.loads(info_path.read_text())
    del info["quant_format"]
    info_path.write_text(json.dumps(info))
    assert not is_current(model_dir) and is_current(model_dir, quantized=False)


def test_calibration_sample_is_deterministic() -> None:
    texts = [f"第{i}段：推动制造业高质量发展。" for i in range(50)] + ["", "  "]
    sample = sample_calibration_texts(texts, 10)
    assert len(sample) == 10 and all(t.strip() for t in sample)
    assert sample_calibration_texts(list(reversed(texts)) + texts, 10) == sample


def test_default_backend_follows_the_dev_comparison(onnx_tagger_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "tagger"
    shutil.copytree(onnx_tagger_dir, model_dir)
    predictor = Predictor(model_dir, backend="torch", num_threads=1, summarizer=None)
    targets = (predictor.predict_proba(TEXTS) >= 0.5).astype(int)  # what torch says: its own macro-F1 is 1
    report = choose_default_backend(model_dir, TEXTS, targets, tolerance=1.0, num_threads=1)
    assert report["backend"] == "onnx" and Predictor(model_dir, summarizer=None, num_threads=1).backend == "onnx"
    saved = json.loads((model_dir / ONNX_DIR / ACCURACY_INFO).read_text())
    assert saved["backend"] == "onnx" and saved["torch_macro_f1"] == 1.0 and "label_agreement" in saved
    report = choose_default_backend(model_dir, TEXTS, targets, tolerance=-1.0, num_threads=1)  # nothing agrees
    assert report["backend"] == "torch" and "kept torch" in report["reason"]
    assert Predictor(model_dir, summarizer=None, num_threads=1).backend == "torch"
    assert choose_default_backend(model_dir, [], targets[:0])["backend"] == "torch"  # no dev rows: no evidence


def test_train_command_exports_onnx_and_makes_it_the_default(tiny_tagger_dir: Path, tmp_path: Path) -> None:
    """What `policylens train` does after training (its --no-onnx flag skips it)."""
    from typer.testing import CliRunner

    from policylens.cli import app
    from policylens.cli.tagger import _onnx_by_default

    model_dir = tmp_path / "tagger"
    shutil.copytree(tiny_tagger_dir, model_dir)
    shutil.rmtree(model_dir / ONNX_DIR, ignore_errors=True)
    predictor = Predictor(model_dir, backend="torch", num_threads=1, summarizer=None)
    dev = [{"text": t, "targets": list(map(int, p >= 0.5))} for t, p in zip(TEXTS, predictor.predict_proba(TEXTS))]
    splits = {"train": [{"text": t} for t in TEXTS * 3], "dev": dev, "test": []}
    _onnx_by_default(model_dir, splits)
    info = export_info(model_dir)
    assert info["calibration"]["source"].startswith("calibration_texts argument")
    assert info["calibration"]["paragraphs"] == len(TEXTS)  # distinct training texts
    accuracy = json.loads((model_dir / ONNX_DIR / ACCURACY_INFO).read_text())
    assert accuracy["data"] == "dev split" and accuracy["n"] == len(TEXTS)
    expected = "onnx" if abs(accuracy["delta_macro_f1"]) <= 0.01 else "torch"
    assert accuracy["backend"] == expected
    assert json.loads((model_dir / "policylens.json").read_text())["inference"]["backend"] == expected
    help_text = CliRunner().invoke(app, ["train", "--help"], terminal_width=200).output
    assert "--no-onnx" in help_text


def test_an_ensemble_tagger_scores_the_same_through_onnx(tiny_ensemble_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "ensemble"
    shutil.copytree(tiny_ensemble_dir, model_dir)
    export_onnx(model_dir, ExportConfig(), calibration_texts=TEXTS)
    torch_probs = Predictor(model_dir, backend="torch", num_threads=1, summarizer=None).predict_proba(TEXTS)
    onnx_probs = Predictor(model_dir, backend="onnx", num_threads=1, summarizer=None).predict_proba(TEXTS)
    assert np.abs(onnx_probs - torch_probs).max() < 0.1
    encoder_only = Predictor(model_dir, backend="onnx", num_threads=1, summarizer=None).calibrated_encoder_proba(TEXTS)
    assert np.abs(onnx_probs - encoder_only).max() > 0.05  # the lexical half is applied on the ONNX path too
