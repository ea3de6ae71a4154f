"""HTTP API: validation, model info, micro-batching and hot swap, on the tiny random tagger.

Everything runs in-process (ASGI transport or TestClient): no sockets are opened.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from inference.batching import MicroBatcher
from inference.predictor import Predictor
from inference.server.app import create_app
from policylens.io import atomic_write
from policylens.tagger.model_dir import TaggerMeta

# Sentences in the tiny tokenizer's vocabulary, of different lengths (several windows at max_length 32).
_PIECES = [
    "工业和信息化部要加快推进制造业数字化转型。",
    "国务院要培育一批专精特新中小企业。",
    "有关部门要实施绿色制造工程推动节能降碳。",
    "重点企业要推动新能源汽车产业链协同创新。",
    "市人民政府要推进5G网络和数据中心等新型基础设施建设。",
    "财政部要加大研发费用加计扣除力度。",
]
PARAGRAPHS = [
    "".join(_PIECES[(i + k) % len(_PIECES)] for k in range(1 + i % 4)) for i in range(24)
]


def light_predictor(model_dir: Path) -> Predictor:
    """The real Predictor with the lead-sentence summariser: no 470 MB sentence encoder in unit tests."""
    from inference.summarize import Summarizer

    return Predictor(model_dir, summarizer=Summarizer())


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and talk to it in-process (no network)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://policylens.test", timeout=30) as client:
            yield client


def copy_tagger(src: Path, dst: Path, version: str) -> Path:
    """A second model: same weights, another version (what a promotion looks like to the server)."""
    shutil.copytree(src, dst)
    meta = TaggerMeta.load(dst)
    meta.version = version
    meta.save(dst)
    return dst


def point(pointer: Path, target: Path) -> None:
    with atomic_write(pointer) as handle:
        handle.write(str(target) + "\n")


@pytest.fixture(scope="module")
def client(tiny_tagger_dir: Path):
    app = create_app(
        tiny_tagger_dir, max_batch=8, max_chars=300, max_documents=3, max_total_chars=1000, poll_seconds=0,
        predictor_factory=light_predictor,
    )
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def reference(tiny_tagger_dir: Path) -> dict[str, Any]:
    """What the predictor says about each paragraph, called directly, one at a time."""
    predictor = Predictor(tiny_tagger_dir)
    return {
        text: {"labels": tags.labels, "scores": tags.scores} for text in PARAGRAPHS for tags in predictor.predict([text])
    }


# ---------------------------------------------------------------------------
# happy paths
# ---------------------------------------------------------------------------


def test_tag_returns_labels_scores_and_version(client: TestClient, reference: dict[str, Any]) -> None:
    response = client.post("/v1/tag", json={"paragraphs": PARAGRAPHS[:5]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "tiny-test"
    assert response.headers["x-model-version"] == "tiny-test"
    assert_same_tags(body["results"], [reference[text] for text in PARAGRAPHS[:5]])


def test_model_info_comes_from_tagger_meta(client: TestClient, tiny_tagger_dir: Path) -> None:
    meta = TaggerMeta.load(tiny_tagger_dir)
    body = client.get("/v1/model").json()
    assert body["version"] == meta.version == "tiny-test"
    assert [label["id"] for label in body["labels"]] == meta.taxonomy.ids
    assert body["taxonomy"] == {"name": meta.taxonomy.name, "version": meta.taxonomy.version}
    assert body["thresholds"] == dict(zip(meta.taxonomy.ids, meta.thresholds))
    assert body["temperature"] == dict(zip(meta.taxonomy.ids, meta.temperature))
    assert body["metrics"] == meta.metrics
    assert body["limits"] == {"max_batch": 8, "max_chars": 300, "max_documents": 3, "max_total_chars": 1000}
    assert Path(body["model_dir"]) == tiny_tagger_dir


def test_healthz_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "model_version": "tiny-test"}
    schema = client.get("/openapi.json").json()
    assert {"/v1/tag", "/v1/analyze", "/v1/model", "/healthz", "/v1/admin/reload"} <= set(schema["paths"])
    assert schema["components"]["schemas"]["TagRequest"]["examples"][0]["paragraphs"]
    assert "413" in schema["paths"]["/v1/tag"]["post"]["responses"]
    assert client.get("/docs").status_code == 200


def test_analyze_tags_segments_aggregates_in_order(client: TestClient) -> None:
    text = "关于推动制造业发展的通知\n一、总体要求\n" + "\n".join(PARAGRAPHS[:3])
    documents = [{"id": "d1", "text": text, "title": "通知"}, {"id": "d2", "text": PARAGRAPHS[5]}]
    response = client.post("/v1/analyze", json={"documents": documents})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "tiny-test" == response.headers["x-model-version"]
    assert [d["id"] for d in body["documents"]] == ["d1", "d2"]
    first = body["documents"][0]
    assert first["title"] == "通知" and first["model_version"] == "tiny-test"
    assert set(first["domains"]) == {"5g", "sme", "carbon", "supply_chain"}
    assert first["n_body_paragraphs"] == 3 and first["n_paragraphs"] == len(first["paragraphs"])
    assert first["summary"]["text"] and first["summary_error"] is None
    # Paragraph tags inside an analysis are the ones /v1/tag gives for the same text.
    texts = [p["text"] for p in first["paragraphs"]]
    tagged = client.post("/v1/tag", json={"paragraphs": texts}).json()["results"]
    assert_same_tags([{"labels": p["labels"], "scores": p["scores"]} for p in first["paragraphs"]], tagged)


# ---------------------------------------------------------------------------
# validation: each case has its status and a message naming the item and the problem
# ---------------------------------------------------------------------------

_LONG = "加" * 301


@pytest.mark.parametrize(
    ("path", "body", "status", "where", "why"),
    [
        ("/v1/tag", {"paragraphs": []}, 422, "paragraphs", "at least 1"),
        ("/v1/tag", {}, 422, "paragraphs", "required"),
        ("/v1/tag", {"paragraph": ["x"]}, 422, "paragraphs", "required (and 1 more)"),  # + extra field "paragraph"
        ("/v1/tag", {"paragraphs": "一段文字"}, 422, "paragraphs", "valid list"),
        ("/v1/tag", {"paragraphs": ["一段文字", 3]}, 422, "paragraphs[1]", "valid string"),
        ("/v1/tag", {"paragraphs": ["一段文字", None]}, 422, "paragraphs[1]", "valid string"),
        ("/v1/tag", {"paragraphs": ["一段文字", ""]}, 422, "paragraphs[1]", "empty"),
        ("/v1/tag", {"paragraphs": ["一段文字", " \u3000\n"]}, 422, "paragraphs[1]", "whitespace"),
        ("/v1/tag", {"paragraphs": ["一段文字"] * 9}, 413, "paragraphs", "limit is 8"),
        ("/v1/tag", {"paragraphs": ["一段文字", _LONG]}, 413, "paragraphs[1]", "301 characters; the limit is 300"),
        ("/v1/tag", {"paragraphs": ["加" * 250] * 5}, 413, "paragraphs", "1250 characters in all; the limit per request is 1000"),
        ("/v1/analyze", {"documents": []}, 422, "documents", "at least 1"),
        ("/v1/analyze", {"documents": [{"text": "一段文字"}]}, 422, "documents[0].id", "required"),
        ("/v1/analyze", {"documents": [{"id": "a", "text": " "}]}, 422, "documents[0].text", "empty"),
        ("/v1/analyze", {"documents": [{"id": "a", "text": 5}]}, 422, "documents[0].text", "valid string"),
        ("/v1/analyze", {"documents": [{"id": "a", "text": "甲"}, {"id": "a", "text": "乙"}]}, 422, "documents",
         "documents[1].id 'a' repeats documents[0].id"),
        ("/v1/analyze", {"documents": [{"id": str(i), "text": "甲"} for i in range(4)]}, 413, "documents", "limit is 3"),
        ("/v1/analyze", {"documents": [{"id": "a", "text": _LONG}]}, 413, "documents[0].text", "limit is 300"),
    ],
)
def test_validation_errors(client: TestClient, path: str, body: Any, status: int, where: str, why: str) -> None:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["message"].startswith(f"{where}: "), error["message"]
    assert why in error["message"], error["message"]
    assert error["detail"] and all({"loc", "msg", "type"} <= set(d) for d in error["detail"])
    assert _LONG not in response.text  # long inputs are never echoed back
    assert response.headers["x-model-version"] == "tiny-test"


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post("/v1/tag", content=b'{"paragraphs": [', headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "JSON" in response.json()["message"]


def test_every_problem_is_listed(client: TestClient) -> None:
    response = client.post("/v1/tag", json={"paragraphs": ["", "好", 7]})
    assert response.status_code == 422
    body = response.json()
    assert [d["loc"] for d in body["detail"]] == [["body", "paragraphs", 0], ["body", "paragraphs", 2]]
    assert "(and 1 more)" in body["message"]


# ---------------------------------------------------------------------------
# micro-batching
# ---------------------------------------------------------------------------


def assert_same_tags(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Same labels, same scores to the last rounded digit.

    Merging changes the shape of the model's matrix multiplies, and CPU BLAS is
    not batch-size invariant: float32 logits move by ~1e-7, which can move a
    4-decimal score by one step (seen on the real e5 model, ~1 score in 100).
    The batcher's own slicing is checked exactly in the tests below.
    """
    assert [r["labels"] for r in got] == [r["labels"] for r in expected]
    for g, e in zip(got, expected):
        assert g["scores"].keys() == e["scores"].keys()
        assert all(abs(g["scores"][k] - e["scores"][k]) <= 1.0001e-4 for k in e["scores"]), (g, e)


def assert_same_results(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g["model_version"] == e["model_version"]
        assert_same_tags(g["results"], e["results"])


def test_concurrent_requests_are_merged_and_match_sequential_calls(tiny_tagger_dir: Path) -> None:
    requests = [PARAGRAPHS[i % len(PARAGRAPHS) : i % len(PARAGRAPHS) + 1 + i % 3] for i in range(40)]

    async def scenario() -> tuple[list[Any], list[Any], dict[str, Any], dict[str, Any]]:
        app = create_app(
            tiny_tagger_dir, max_batch=32, max_wait_ms=20, poll_seconds=0, predictor_factory=light_predictor
        )
        async with serving(app) as http:
            sequential = []
            for paragraphs in requests:
                response = await http.post("/v1/tag", json={"paragraphs": paragraphs})
                sequential.append(response.json())
            before = (await http.get("/v1/stats")).json()["tag"]
            responses = await asyncio.gather(*(http.post("/v1/tag", json={"paragraphs": p}) for p in requests))
            after = (await http.get("/v1/stats")).json()["tag"]
            return sequential, [r.json() for r in responses], before, after

    sequential, concurrent, before, after = asyncio.run(scenario())
    assert before["merged_batches"] == 0 and before["batches"] == len(requests)  # one at a time: no merging
    assert_same_results(concurrent, sequential)
    assert after["merged_batches"] > 0
    assert after["max_requests_in_batch"] > 1
    assert after["max_items_in_batch"] <= 32
    assert after["batches"] - before["batches"] < len(requests)


def test_a_failing_request_does_not_fail_the_requests_merged_with_it() -> None:
    def run(items: list[str]) -> tuple[str, list[str]]:
        if "bad" in items:
            raise ValueError("cannot score 'bad'")
        return "m1", [item.upper() for item in items]

    async def scenario() -> list[Any]:
        batcher: MicroBatcher[str, str, str] = MicroBatcher(run, max_batch=16, max_wait_ms=20)
        batcher.start()
        try:
            jobs = [["a", "b"], ["bad"], ["c"], ["d", "e", "f"]]
            return await asyncio.gather(*(batcher.submit(j) for j in jobs), return_exceptions=True)
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert results[0] == ("m1", ["A", "B"])
    assert isinstance(results[1], ValueError)
    assert results[2] == ("m1", ["C"]) and results[3] == ("m1", ["D", "E", "F"])


def test_batches_never_exceed_max_batch_and_keep_order() -> None:
    sizes: list[int] = []

    def run(items: list[int]) -> tuple[str, list[int]]:
        sizes.append(len(items))
        return "m", [i * 10 for i in items]

    async def scenario() -> list[Any]:
        batcher: MicroBatcher[int, int, str] = MicroBatcher(run, max_batch=5, max_wait_ms=5)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(list(range(n, n + 1 + n % 4))) for n in range(20)))
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert [r[1] for r in results] == [[i * 10 for i in range(n, n + 1 + n % 4)] for n in range(20)]
    assert max(sizes) <= 5 and len(sizes) < 20


# ---------------------------------------------------------------------------
# hot swap
# ---------------------------------------------------------------------------


def test_hot_swap_under_load(tiny_tagger_dir: Path, tmp_path: Path, reference: dict[str, Any]) -> None:
    v2 = copy_tagger(tiny_tagger_dir, tmp_path / "v2", "tiny-v2")
    broken = copy_tagger(tiny_tagger_dir, tmp_path / "broken", "tiny-broken")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    pointer = tmp_path / "registry" / "CURRENT"
    pointer.parent.mkdir()
    point(pointer, tiny_tagger_dir)

    sent: list[list[str]] = []
    responses: list[httpx.Response] = []

    async def scenario() -> tuple[dict[str, Any], httpx.Response]:
        app = create_app(
            None, registry_pointer=pointer, poll_seconds=0.05, max_wait_ms=5, predictor_factory=light_predictor
        )
        stop = asyncio.Event()

        async with serving(app) as http:
            async def client(n: int) -> None:
                i = n
                while not stop.is_set():
                    paragraphs = PARAGRAPHS[i % 24 : i % 24 + 2]
                    response = await http.post("/v1/tag", json={"paragraphs": paragraphs})
                    sent.append(paragraphs)
                    responses.append(response)
                    i += 7

            async def seen(version: str, timeout: float = 20.0) -> None:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + timeout
                while not any(r.json().get("model_version") == version for r in responses[-4:]):
                    assert loop.time() < deadline, f"never served {version}"
                    await asyncio.sleep(0.02)

            clients = [asyncio.create_task(client(n)) for n in range(6)]
            await seen("tiny-test")
            point(pointer, v2)  # promote
            await seen("tiny-v2")
            point(pointer, broken)  # a bad promotion must not take the service down
            service = app.state.service
            deadline = asyncio.get_running_loop().time() + 20
            while service.last_error is None:
                assert asyncio.get_running_loop().time() < deadline, "the watcher never tried the broken model"
                await asyncio.sleep(0.02)
            n_before = len(responses)
            while len(responses) < n_before + 12:  # still serving after the failed load
                await asyncio.sleep(0.02)
            stop.set()
            await asyncio.gather(*clients)
            info = (await http.get("/v1/model")).json()
            manual = await http.post("/v1/admin/reload")
            return info, manual

    info, manual = asyncio.run(scenario())
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200][:3]
    versions = [r.json()["model_version"] for r in responses]
    assert set(versions) == {"tiny-test", "tiny-v2"}
    # Same weights in both models: every response is exactly the reference, whichever model served it.
    for paragraphs, response in zip(sent, responses):
        assert_same_tags(response.json()["results"], [reference[text] for text in paragraphs])
    assert info["version"] == "tiny-v2" and "broken" in info["reload"]["last_error"]
    assert manual.status_code == 500
    assert manual.json()["model_version"] == "tiny-v2" and manual.json()["status"] == "failed"


class _GatedPredictor(Predictor):
    """Blocks in predict() until released, to hold a request in flight across a swap."""

    gate = threading.Event()
    entered = threading.Event()

    def predict(self, texts):  # type: ignore[override]
        if threading.current_thread().name.startswith("policylens-infer"):  # not the warm-up call at load
            self.entered.set()
            assert self.gate.wait(20)
        return super().predict(texts)


def gated(model_dir: Path) -> _GatedPredictor:
    return _GatedPredictor(model_dir, summarizer=None)


def test_in_flight_request_finishes_on_the_model_it_started_with(tiny_tagger_dir: Path, tmp_path: Path) -> None:
    v2 = copy_tagger(tiny_tagger_dir, tmp_path / "v2", "tiny-v2")
    pointer = tmp_path / "CURRENT"
    point(pointer, tiny_tagger_dir)

    async def scenario() -> tuple[httpx.Response, dict[str, Any], httpx.Response]:
        _GatedPredictor.gate.clear()
        _GatedPredictor.entered.clear()
        app = create_app(None, registry_pointer=pointer, poll_seconds=0, predictor_factory=gated)
        async with serving(app) as http:
            in_flight = asyncio.create_task(http.post("/v1/tag", json={"paragraphs": PARAGRAPHS[:3]}))
            while not _GatedPredictor.entered.is_set():
                await asyncio.sleep(0.01)
            point(pointer, v2)
            reload = (await http.post("/v1/admin/reload", params={"force": "false"})).json()  # loads while v1 is busy
            _GatedPredictor.gate.set()
            return await in_flight, reload, await http.post("/v1/tag", json={"paragraphs": PARAGRAPHS[:3]})

    old, reload, new = asyncio.run(scenario())
    assert reload["status"] == "reloaded" and reload["previous_version"] == "tiny-test"
    assert old.json()["model_version"] == "tiny-test"
    assert new.json()["model_version"] == "tiny-v2"
    assert_same_tags(old.json()["results"], new.json()["results"])


def test_reload_without_change_is_a_no_op_and_model_dir_is_watched(tiny_tagger_dir: Path, tmp_path: Path) -> None:
    model_dir = copy_tagger(tiny_tagger_dir, tmp_path / "default", "tiny-a")
    app = create_app(model_dir, poll_seconds=0, predictor_factory=light_predictor)
    with TestClient(app) as http:
        assert http.post("/v1/admin/reload", params={"force": "false"}).json()["status"] == "unchanged"
        meta = TaggerMeta.load(model_dir)
        meta.version = "tiny-b"
        meta.save(model_dir)  # retrained in place
        result = http.post("/v1/admin/reload", params={"force": "false"}).json()
        assert result["status"] == "reloaded" and result["model_version"] == "tiny-b"
        assert http.get("/healthz").json()["model_version"] == "tiny-b"


def test_pointer_paths_are_relative_to_the_pointer_file(tmp_path: Path) -> None:
    from policylens.tagger.model_dir import read_pointer

    (tmp_path / "taggers" / "v3").mkdir(parents=True)
    (tmp_path / "registry").mkdir()
    pointer = tmp_path / "registry" / "CURRENT"
    pointer.write_text("../taggers/v3\n")
    assert read_pointer(pointer).resolve() == (tmp_path / "taggers" / "v3").resolve()
    pointer.write_text('{"path": "%s"}' % (tmp_path / "taggers" / "v3"))
    assert read_pointer(pointer) == tmp_path / "taggers" / "v3"
    pointer.write_text(" \n")
    with pytest.raises(ValueError, match="empty registry pointer"):
        read_pointer(pointer)


def test_full_queue_answers_503_with_retry_after(tiny_tagger_dir: Path) -> None:
    async def scenario() -> list[httpx.Response]:
        _GatedPredictor.gate.clear()
        _GatedPredictor.entered.clear()
        app = create_app(tiny_tagger_dir, max_queue=4, poll_seconds=0, predictor_factory=gated)
        async with serving(app) as http:
            first = asyncio.create_task(http.post("/v1/tag", json={"paragraphs": PARAGRAPHS[:2]}))
            while not _GatedPredictor.entered.is_set():  # the model is busy with `first`
                await asyncio.sleep(0.01)
            queued = asyncio.create_task(http.post("/v1/tag", json={"paragraphs": PARAGRAPHS[:3]}))
            while app.state.service.tag_batcher.queued < 3:
                await asyncio.sleep(0.01)
            rejected = await http.post("/v1/tag", json={"paragraphs": PARAGRAPHS[:2]})
            _GatedPredictor.gate.set()
            return [await first, await queued, rejected]

    first, queued, rejected = asyncio.run(scenario())
    assert first.status_code == 200 and queued.status_code == 200
    assert rejected.status_code == 503 and rejected.headers["retry-after"] == "1"
    assert "retry" in rejected.json()["message"]


def test_serve_command(monkeypatch: pytest.MonkeyPatch, tiny_tagger_dir: Path, tmp_path: Path) -> None:
    import typer
    import uvicorn
    from typer.testing import CliRunner

    from policylens.cli.serve import register

    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    cli = typer.Typer()
    register(cli)

    @cli.command()
    def other() -> None:  # a second command, so `serve` stays a named sub-command as in policylens/cli.py
        pass

    runner = CliRunner()
    result = runner.invoke(cli, ["serve", "--model", str(tiny_tagger_dir), "--port", "8123"])
    assert result.exit_code == 0, result.output
    app, kwargs = calls[-1]
    assert isinstance(app, FastAPI) and kwargs["host"] == "127.0.0.1" and kwargs["port"] == 8123
    result = runner.invoke(cli, ["serve", "--model", str(tmp_path)])
    assert result.exit_code == 2 and "not a policylens tagger" in result.output
    assert "--registry" in runner.invoke(cli, ["serve", "--help"]).output


def test_watcher_picks_up_a_model_retrained_in_place(tiny_tagger_dir: Path, tmp_path: Path) -> None:
    import os
    import time

    model_dir = copy_tagger(tiny_tagger_dir, tmp_path / "default", "tiny-a")
    app = create_app(model_dir, poll_seconds=0.05, predictor_factory=light_predictor)
    with TestClient(app) as http:
        assert http.get("/healthz").json()["model_version"] == "tiny-a"
        retrained = copy_tagger(tiny_tagger_dir, tmp_path / ".default.tmp", "tiny-b")
        os.replace(model_dir, tmp_path / ".default.old")  # what training.tagger.save_tagger does
        os.replace(retrained, model_dir)
        deadline = time.monotonic() + 20
        while http.get("/healthz").json()["model_version"] != "tiny-b":
            assert time.monotonic() < deadline, "the watcher never loaded the retrained model"
            time.sleep(0.05)
        assert http.get("/v1/model").json()["reload"]["last_error"] is None
