"""Same paragraph, same answer: scores must not depend on the batch, the padding, the backend's
batching or the server's load.

Each paragraph is scored alone, then in mixed batches of several sizes (short paragraphs
padded next to long ones), then through the server's micro-batcher with concurrent callers,
with both backends; labels must be identical and scores within 1e-4. With the int8 model of
quantize_dynamic (activation scales computed per batch tensor) this failed: on the tiny
tagger a probability moved by up to 0.08 and 30 of 800 labels flipped between batch sizes.
"""

from __future__ import annotations

import asyncio
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from inference.batching import MicroBatcher
from inference.onnx_backend import (
    ExportConfig,
    OnnxScorer,
    export_info,
    export_onnx,
    onnx_path,
)
from inference.predictor import Predictor
from policylens.encoders.windows import pad_batch

TOLERANCE = 1e-4

_SENTENCES = [
    "加快推进5G网络和数据中心等新型基础设施建设。",
    "培育一批专精特新中小企业，优化营商环境降低企业融资成本。",
    "实施绿色制造工程推动节能降碳。",
    "推动新能源汽车产业链协同创新。",
    "严格控制钢铁、水泥等行业新增产能。",
    "支持集成电路产业高质量发展，建设国家级先进制造业集群。",
    "一、总体要求",
    "扩大工业互联网平台应用规模。",
]
# short (one window) and long (several windows at the tiny tagger's max_length 32) paragraphs
PARAGRAPHS = _SENTENCES + [
    "".join(_SENTENCES[(i + k) % len(_SENTENCES)] for k in range(2 + i % 5)) for i in range(10)
]


@pytest.fixture(scope="module")
def model_dir(tiny_tagger_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny tagger with its int8 ONNX export (default calibration: training paragraphs)."""
    target = tmp_path_factory.mktemp("determinism") / "tagger"
    shutil.copytree(tiny_tagger_dir, target)
    export_onnx(target, ExportConfig())
    return target


def predictor(model_dir: Path, backend: str) -> Predictor:
    return Predictor(model_dir, backend=backend, num_threads=1, summarizer=None)


def as_rows(tags) -> list[tuple[list[str], dict[str, float]]]:
    return [(list(t.labels), dict(t.scores)) for t in tags]


def assert_same(got: list, want: list, how: str) -> None:
    assert len(got) == len(want)
    for (labels, scores), (want_labels, want_scores) in zip(got, want):
        assert labels == want_labels, f"{how}: labels differ"
        diff = max(abs(scores[k] - want_scores[k]) for k in want_scores)
        assert diff <= TOLERANCE + 1e-9, f"{how}: a score moved by {diff:.5f}"


def mixed_batches(texts: list[str], size: int, seed: int) -> list[list[int]]:
    """Index batches of `size` that mix short and long paragraphs (a shuffled order)."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    return [order[i : i + size] for i in range(0, len(order), size)]


def test_export_records_static_calibration(model_dir: Path) -> None:
    info = export_info(model_dir)
    assert info["quant_format"] == 2 and "static" in info["quantization"]
    calibration = info["calibration"]
    assert calibration["method"] == "minmax" and calibration["paragraphs"] > 0 and calibration["windows"] > 0
    assert "batch of 1" in calibration["batch"]


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_scores_do_not_depend_on_the_batch(model_dir: Path, backend: str) -> None:
    model = predictor(model_dir, backend)
    alone = [as_rows(model.predict([text]))[0] for text in PARAGRAPHS]
    alone_probs = np.stack([model.predict_proba([text])[0] for text in PARAGRAPHS])
    for size in (2, 3, 8, len(PARAGRAPHS)):
        for seed in (0, 1):
            model.batch_size = size  # the scorer's own batches (length-sorted, padded to the longest)
            got: list = [None] * len(PARAGRAPHS)
            probs = np.zeros_like(alone_probs)
            for batch in mixed_batches(PARAGRAPHS, size, seed):
                texts = [PARAGRAPHS[i] for i in batch]
                for i, row in zip(batch, as_rows(model.predict(texts))):
                    got[i] = row
                probs[batch] = model.predict_proba(texts)
            assert_same(got, alone, f"{backend}, batches of {size} (order {seed})")
            np.testing.assert_allclose(probs, alone_probs, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_scores_do_not_depend_on_the_micro_batcher(model_dir: Path, backend: str) -> None:
    """Concurrent callers whose paragraphs are merged into shared model calls, as the server does."""
    model = predictor(model_dir, backend)
    alone = [as_rows(model.predict([text]))[0] for text in PARAGRAPHS]

    async def scenario() -> tuple[list[list[int]], list, dict]:
        batcher = MicroBatcher(lambda items: ("m", model.predict(items)), max_batch=12, max_wait_ms=20)
        batcher.start()
        try:
            rng = random.Random(7)
            requests = [rng.sample(range(len(PARAGRAPHS)), rng.randint(1, 5)) for _ in range(24)]
            results = await asyncio.gather(*(batcher.submit([PARAGRAPHS[i] for i in r]) for r in requests))
            return requests, results, batcher.stats.to_dict()
        finally:
            await batcher.stop()

    requests, results, stats = asyncio.run(scenario())
    assert stats["merged_batches"] > 0  # requests really shared model calls
    for request, (_, tags) in zip(requests, results):
        assert_same(as_rows(tags), [alone[i] for i in request], f"{backend}, micro-batched")


def test_scores_do_not_depend_on_concurrent_http_requests(model_dir: Path) -> None:
    """The server (default backend: onnx here) answers every paragraph as it scores it alone."""
    import httpx

    from inference.server.app import create_app
    from policylens.tagger.model_dir import set_default_backend

    served = model_dir.parent / "served"
    if not served.exists():
        shutil.copytree(model_dir, served)
        set_default_backend(served, "onnx")
    reference = predictor(served, "onnx")
    alone = {text: as_rows(reference.predict([text]))[0] for text in PARAGRAPHS}

    async def scenario() -> tuple[list[list[str]], list]:
        app = create_app(served, poll_seconds=0, max_wait_ms=20, num_threads=1, preload_summarizer=False)
        async with app.router.lifespan_context(app):
            assert app.state.service.current.predictor.backend == "onnx"  # the model's default backend
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://policylens.test", timeout=60) as http:
                rng = random.Random(3)
                sent = [rng.sample(PARAGRAPHS, rng.randint(1, 6)) for _ in range(16)]
                responses = await asyncio.gather(*(http.post("/v1/tag", json={"paragraphs": p}) for p in sent))
                return sent, responses

    sent, responses = asyncio.run(scenario())
    for paragraphs, response in zip(sent, responses):
        assert response.status_code == 200, response.text
        got = [(r["labels"], r["scores"]) for r in response.json()["results"]]
        assert_same(got, [alone[text] for text in paragraphs], "over HTTP")


def test_padding_does_not_leak_into_a_short_window(model_dir: Path) -> None:
    """At the scorer: a short window padded to a long one's width gives the logits it gives alone."""
    model = predictor(model_dir, "onnx")
    windows, _ = model._windows([PARAGRAPHS[2], PARAGRAPHS[-1]])
    short, long = min(windows, key=len), max(windows, key=len)
    assert len(short) < len(long)
    for path in (onnx_path(model_dir), onnx_path(model_dir, quantized=False)):
        scorer = OnnxScorer(path)
        alone = scorer(*pad_batch([short], model._windows.pad_id))[0]
        padded = scorer(*pad_batch([long, short, long], model._windows.pad_id))[1]
        np.testing.assert_allclose(padded, alone, atol=1e-5, rtol=0)
