"""Micro-batcher faults: work its caller gave up never reaches the model, and a slow model
cannot hold a request forever (503 with Retry-After), nor delay the next one with abandoned work.

The model functions here count every item they are given; a `gate` holds a call inside
the model (as a long batch would) so the tests can queue work behind it deterministically.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from inference.batching import ClientDisconnected, MicroBatcher, RequestTimeout
from inference.predictor import Predictor
from inference.server.app import create_app
from inference.server.limits import DEFAULT_LIMITS, ServerLimits

PARAGRAPHS = [
    "工业和信息化部要加快推进制造业数字化转型。",
    "国务院要培育一批专精特新中小企业。",
    "有关部门要实施绿色制造工程推动节能降碳。",
    "重点企业要推动新能源汽车产业链协同创新。",
    "市人民政府要推进5G网络和数据中心等新型基础设施建设。",
    "财政部要加大研发费用加计扣除力度。",
]


class CountingModel:
    """A batch runner that records what reaches it; while `gate` is clear, a call waits inside the model."""

    def __init__(self, seconds_per_call: float = 0.0) -> None:
        self.calls: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.seconds_per_call = seconds_per_call

    def __call__(self, items: list[str]) -> tuple[str, list[str]]:
        self.calls.append(list(items))
        self.entered.set()
        assert self.gate.wait(20), "the test never released the model"
        time.sleep(self.seconds_per_call)
        return "model", [f"result of {item}" for item in items]

    @property
    def seen(self) -> list[str]:
        return [item for call in self.calls for item in call]


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.005)


@asynccontextmanager
async def running(model: CountingModel, **options) -> AsyncIterator[MicroBatcher]:
    pool = ThreadPoolExecutor(max_workers=1)
    batcher = MicroBatcher(model, executor=pool, **options)
    batcher.start()
    try:
        yield batcher
    finally:
        model.gate.set()
        await batcher.stop()
        pool.shutdown(wait=True)


# ---------------------------------------------------------------------------
# the batcher alone
# ---------------------------------------------------------------------------


def test_a_cancelled_submit_never_reaches_the_model() -> None:
    async def scenario() -> tuple[CountingModel, MicroBatcher, list]:
        model = CountingModel()
        model.gate.clear()
        async with running(model, max_batch=4, max_wait_ms=0) as batcher:
            busy = asyncio.create_task(batcher.submit(["busy"]))
            await until(model.entered.is_set)  # the model is inside the first batch
            gone = asyncio.create_task(batcher.submit(["gone 1", "gone 2"]))
            await until(lambda: batcher.queued == 2)
            gone.cancel()  # what an ASGI server does to a handler whose client left
            with pytest.raises(asyncio.CancelledError):
                await gone
            assert batcher.queued == 0  # its units left the queue at once, not when the collector reached it
            later = asyncio.create_task(batcher.submit(["later"]))
            model.gate.set()
            results = [await busy, await later]
            return model, batcher, results

    model, batcher, results = asyncio.run(scenario())
    assert model.seen == ["busy", "later"]
    assert [r[1] for r in results] == [["result of busy"], ["result of later"]]
    assert batcher.stats.abandoned == 1 and batcher.stats.dropped_items == 2


def test_a_job_cancelled_while_its_batch_is_assembled_is_dropped() -> None:
    """The collector has already taken the job and is waiting for more; the caller gives up meanwhile."""

    async def scenario() -> tuple[CountingModel, MicroBatcher, object]:
        model = CountingModel()
        async with running(model, max_batch=64, max_wait_ms=300) as batcher:
            gone = asyncio.create_task(batcher.submit(["gone"]))
            await until(lambda: batcher.stats.requests == 1 and batcher.queued == 0)  # taken into the open batch
            gone.cancel()
            kept = await batcher.submit(["kept"])  # joins (or follows) the same batch
            return model, batcher, kept

    model, batcher, kept = asyncio.run(scenario())
    assert model.seen == ["kept"] and kept == ("model", ["result of kept"])
    assert batcher.stats.dropped_items == 1


def test_a_caller_side_timeout_drops_the_queued_job() -> None:
    async def scenario() -> CountingModel:
        model = CountingModel()
        model.gate.clear()
        async with running(model, max_batch=4, max_wait_ms=0) as batcher:
            busy = asyncio.create_task(batcher.submit(["busy"]))
            await until(model.entered.is_set)
            with pytest.raises(asyncio.TimeoutError):  # a client-side timeout cancels the awaiting coroutine
                await asyncio.wait_for(batcher.submit(["impatient"]), 0.05)
            model.gate.set()
            await busy
            await batcher.submit(["after"])
        return model

    assert asyncio.run(scenario()).seen == ["busy", "after"]


def test_the_time_limit_raises_and_drops_the_job() -> None:
    async def scenario() -> tuple[CountingModel, MicroBatcher, float]:
        model = CountingModel()
        model.gate.clear()
        async with running(model, max_batch=4, max_wait_ms=0) as batcher:
            busy = asyncio.create_task(batcher.submit(["busy"]))
            await until(model.entered.is_set)
            started = time.monotonic()
            with pytest.raises(RequestTimeout) as caught:
                await batcher.submit(["late"], timeout=0.2)
            waited = time.monotonic() - started
            assert caught.value.timeout_s == 0.2
            model.gate.set()
            await busy
        return model, batcher, waited

    model, batcher, waited = asyncio.run(scenario())
    assert 0.19 <= waited < 2.0
    assert model.seen == ["busy"]
    assert batcher.stats.timed_out == 1 and batcher.stats.dropped_items == 1


def test_a_client_that_goes_away_drops_its_job() -> None:
    async def scenario() -> tuple[CountingModel, MicroBatcher]:
        model = CountingModel()
        model.gate.clear()
        gone = asyncio.Event()
        async with running(model, max_batch=4, max_wait_ms=0) as batcher:
            busy = asyncio.create_task(batcher.submit(["busy"]))
            await until(model.entered.is_set)
            waiting = asyncio.create_task(batcher.submit(["left"], timeout=30, client_gone=gone.wait))
            await until(lambda: batcher.queued == 1)
            gone.set()  # the disconnect message arrives
            with pytest.raises(ClientDisconnected):
                await waiting
            model.gate.set()
            await busy
        return model, batcher

    model, batcher = asyncio.run(scenario())
    assert model.seen == ["busy"]
    assert batcher.stats.disconnected == 1 and batcher.stats.dropped_items == 1


def test_abandoned_work_does_not_delay_the_next_request() -> None:
    """Ten requests give up behind a long batch; the next one waits for that batch only, not for theirs."""
    per_call = 0.3

    async def scenario() -> tuple[CountingModel, float]:
        model = CountingModel(seconds_per_call=per_call)
        model.gate.clear()
        async with running(model, max_batch=4, max_wait_ms=0) as batcher:
            busy = asyncio.create_task(batcher.submit(["busy"]))
            await until(model.entered.is_set)
            abandoned = [
                asyncio.create_task(batcher.submit([f"abandoned {n}.{k}" for k in range(4)], timeout=0.1))
                for n in range(10)
            ]
            outcomes = await asyncio.gather(*abandoned, return_exceptions=True)
            assert all(isinstance(o, RequestTimeout) for o in outcomes)
            model.gate.set()
            started = time.monotonic()
            assert await batcher.submit(["next"]) == ("model", ["result of next"])
            waited = time.monotonic() - started
            await busy
        return model, waited

    model, waited = asyncio.run(scenario())
    assert model.seen == ["busy", "next"]  # 40 abandoned items never ran
    # the rest of `busy` plus its own call; the abandoned work alone would have been 10 calls (3 s)
    assert waited < 4 * per_call, waited


# ---------------------------------------------------------------------------
# over HTTP
# ---------------------------------------------------------------------------


class _SlowPredictor(Predictor):
    """The real tiny Predictor, but every call on the inference thread waits on `gate` and is recorded."""

    gate = threading.Event()
    entered = threading.Event()
    seen: list[str] = []

    def predict(self, texts):  # type: ignore[override]
        if threading.current_thread().name.startswith("policylens-infer"):  # not the warm-up call at load
            type(self).seen.extend(texts)
            self.entered.set()
            assert self.gate.wait(20)
        return super().predict(texts)


def slow_predictor(model_dir: Path) -> _SlowPredictor:
    return _SlowPredictor(model_dir, backend="torch", summarizer=None, num_threads=1)


def _reset_slow_predictor() -> None:
    _SlowPredictor.gate.clear()
    _SlowPredictor.entered.clear()
    _SlowPredictor.seen = []


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://policylens.test", timeout=30) as client:
            yield client


def test_request_time_limit_is_a_server_limit() -> None:
    assert DEFAULT_LIMITS.request_timeout_s > 0 and DEFAULT_LIMITS.retry_after_s >= 1
    limits = ServerLimits.from_env({"POLICYLENS_SERVE_REQUEST_TIMEOUT_S": "7.5", "POLICYLENS_SERVE_RETRY_AFTER_S": "3"})
    assert (limits.request_timeout_s, limits.retry_after_s) == (7.5, 3)
    with pytest.raises(ValueError, match="request_timeout_s"):
        ServerLimits(request_timeout_s=-1)


def test_slow_model_answers_503_with_retry_after_and_the_next_request_is_not_delayed(tiny_tagger_dir: Path) -> None:
    async def scenario():
        _reset_slow_predictor()
        app = create_app(tiny_tagger_dir, poll_seconds=0, request_timeout_s=0.5, retry_after_s=3,
                         predictor_factory=slow_predictor)
        async with serving(app) as http:
            first = asyncio.create_task(http.post("/v1/tag", json={"paragraphs": PARAGRAPHS[:2]}))
            await until(_SlowPredictor.entered.is_set)  # the model is stuck in `first`
            queued = [await http.post("/v1/tag", json={"paragraphs": [text]}) for text in PARAGRAPHS[2:4]]
            stuck = await first  # its own limit ran out too, while the model still had it
            _SlowPredictor.gate.set()
            started = time.monotonic()
            after = await http.post("/v1/tag", json={"paragraphs": PARAGRAPHS[4:5]})
            waited = time.monotonic() - started
            stats = (await http.get("/v1/stats")).json()["tag"]
        return stuck, queued, after, waited, stats

    stuck, queued, after, waited, stats = asyncio.run(scenario())
    for response in [stuck, *queued]:
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "3"
        body = response.json()
        assert body["detail"][0]["type"] == "timeout" and "0.5 s" in body["message"]
    assert after.status_code == 200 and len(after.json()["results"]) == 1
    assert waited < 5.0
    # the two requests that timed out in the queue never reached the model
    assert _SlowPredictor.seen == PARAGRAPHS[:2] + PARAGRAPHS[4:5]
    assert stats["timed_out"] == 3 and stats["dropped_items"] == 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_disconnecting_http_client_cancels_its_queued_work(tiny_tagger_dir: Path) -> None:
    """A real socket through uvicorn: the client sends a request, then hangs up while it is queued."""
    import json

    import uvicorn

    _reset_slow_predictor()
    app = create_app(tiny_tagger_dir, poll_seconds=0, predictor_factory=slow_predictor)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.02)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as http:
            busy_result: list[httpx.Response] = []
            busy = threading.Thread(
                target=lambda: busy_result.append(http.post("/v1/tag", json={"paragraphs": PARAGRAPHS[:1]}))
            )
            busy.start()
            assert _SlowPredictor.entered.wait(20)
            batcher = app.state.service.tag_batcher
            body = json.dumps({"paragraphs": PARAGRAPHS[1:3]}, ensure_ascii=False).encode()
            with socket.create_connection(("127.0.0.1", port)) as raw:
                raw.sendall(
                    b"POST /v1/tag HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
                )
                deadline = time.monotonic() + 10
                while batcher.queued < 2:
                    assert time.monotonic() < deadline, "the request was never queued"
                    time.sleep(0.01)
            # the socket is closed: the server notices and drops the queued job
            deadline = time.monotonic() + 10
            while batcher.stats.disconnected < 1:
                assert time.monotonic() < deadline, "the disconnect was never noticed"
                time.sleep(0.01)
            assert batcher.queued == 0
            _SlowPredictor.gate.set()
            busy.join(30)
            after = http.post("/v1/tag", json={"paragraphs": PARAGRAPHS[3:4]})
        assert busy_result[0].status_code == 200 and after.status_code == 200
        assert _SlowPredictor.seen == PARAGRAPHS[:1] + PARAGRAPHS[3:4]
        assert batcher.stats.dropped_items == 2
    finally:
        _SlowPredictor.gate.set()
        server.should_exit = True
        thread.join(30)
