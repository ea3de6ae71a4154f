"""The summariser's int8 ONNX sentence encoder: exported from a tiny random BERT, it agrees with the
torch mean-pooled embedding, never depends on its batch-mates, and is re-exported only when stale."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from inference.sentence_onnx import (
    SentenceExportConfig,
    ensure_sentence_encoder,
    export_sentence_encoder,
)
from policylens.io import InputError
from policylens.summarizer.encoder import EXPORT_FILE, OnnxSentenceEncoder, is_exported

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CALIBRATION = [f"{who}要{what}。" for who in ("国务院", "有关部门", "地方各级政府", "重点企业")
               for what in ("加快推进制造业数字化转型", "培育一批专精特新中小企业", "实施绿色制造工程推动节能降碳",
                            "提升产业链供应链韧性", "扩大工业互联网平台应用规模", "优化营商环境降低企业融资成本",
                            "加强关键核心技术攻关", "推进5G网络建设")]
SENTENCES = [
    "国务院要加快推进制造业数字化转型。",
    "财政部要落实高新技术企业税收优惠政策，对符合条件的企业给予不超过500万元的一次性奖励。",
    "重点企业要加强关键核心技术攻关。",
    "推进5G网络和数据中心等新型基础设施建设。",
]


@pytest.fixture(scope="module")
def exported(tiny_backbone_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sentence_onnx") / "encoder"
    return export_sentence_encoder(out, backbone=tiny_backbone_dir,
                                   config=SentenceExportConfig(layers=2, max_length=48, calibration_size=32),
                                   calibration=CALIBRATION)


def _torch_embeddings(backbone: Path, texts: list[str]) -> np.ndarray:
    import torch

    from policylens.encoders.backbone import load_backbone, mean_pool

    tokenizer, model = load_backbone(str(backbone))
    enc = tokenizer(["passage: " + t for t in texts], padding=True, truncation=True, max_length=48,
                    return_tensors="pt")
    with torch.inference_mode():
        hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    return mean_pool(hidden, enc["attention_mask"]).numpy()


def test_int8_embeddings_agree_with_torch(exported: Path, tiny_backbone_dir: Path) -> None:
    encoder = OnnxSentenceEncoder(exported)
    onnx = encoder.encode(SENTENCES)
    torch = _torch_embeddings(tiny_backbone_dir, SENTENCES)
    assert onnx.shape == (len(SENTENCES), encoder.dim) == torch.shape
    np.testing.assert_allclose(np.linalg.norm(onnx, axis=1), 1.0, atol=1e-5)
    cosine = (onnx * torch).sum(1)
    assert cosine.min() > 0.98, cosine


def test_a_sentence_embeds_the_same_alone_or_in_any_batch(exported: Path) -> None:
    encoder = OnnxSentenceEncoder(exported, batch_size=4)
    together = encoder.encode(SENTENCES)
    for i, text in enumerate(SENTENCES):
        np.testing.assert_allclose(encoder.encode([text])[0], together[i], atol=1e-6)
    assert encoder.encode([]).shape == (0, encoder.dim)
    assert encoder.encode_query("中小企业").shape == (encoder.dim,)


def test_export_records_what_made_it_and_ensure_reuses_it(exported: Path, tiny_backbone_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    info = json.loads((exported / EXPORT_FILE).read_text(encoding="utf-8"))
    assert info["config"]["layers"] == 2 and info["quantization"]["int8_matmuls"] > 0 and info["fingerprint"]
    assert OnnxSentenceEncoder(exported).fingerprint == f"onnx-int8:{info['fingerprint']}"
    import inference.sentence_onnx as module

    config = SentenceExportConfig(layers=2, max_length=48, calibration_size=32)
    monkeypatch.setattr(module, "default_calibration_sentences", lambda size: CALIBRATION)
    calls = []
    monkeypatch.setattr(module, "export_sentence_encoder", lambda *a, **k: calls.append(k) or exported)
    assert ensure_sentence_encoder(exported, backbone=tiny_backbone_dir, config=config, log=lambda m: None) == exported
    assert calls == []  # current: nothing exported again
    ensure_sentence_encoder(exported, backbone=tiny_backbone_dir, config=SentenceExportConfig(layers=1),
                            log=lambda m: None)
    assert len(calls) == 1  # other settings: exported again


def test_a_missing_export_is_a_clear_error(tmp_path: Path) -> None:
    assert not is_exported(tmp_path)
    with pytest.raises(InputError, match="no exported sentence encoder"):
        OnnxSentenceEncoder(tmp_path)
    with pytest.raises(ValueError):
        SentenceExportConfig(layers=0)
