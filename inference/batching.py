"""Micro-batching: merge the items of concurrent requests into one model call.

Why: one forward pass over 64 paragraphs costs far less than 64 passes over one
(padding aside, the matrix multiplies fill the CPU's vector units), so under
load throughput grows with the batch. With a single client the only price is a
wait of at most `max_wait_ms` before a batch closes.

How: requests put a job (their items and a future) on an asyncio queue; one
collector task takes jobs until the batch holds `max_batch` units or the wait
runs out, runs the model in a worker thread (`run_in_executor`, so the event
loop keeps accepting requests), then resolves each job's future with its own
slice. A request is never split across batches, so all of its results come
from one model, and the results are in the order the items were sent.

Abandoned work is dropped, not run: a caller that gives up (its `submit` is
cancelled, its `timeout` runs out, or `client_gone` reports its client went away)
cancels its job's future, and a job whose future is done is skipped when a batch
is assembled and again just before the batch runs. Only a batch already inside
the model finishes (its results are discarded), so the work a later request can
wait behind is at most one batch of `max_batch` units.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

I = TypeVar("I")  # an item: a paragraph text, a document
R = TypeVar("R")  # the result for one item
M = TypeVar("M")  # what produced a batch's results (the model), reported with them

# A batch runner takes the items of one batch and returns (model, one result per item).
Runner = Callable[[list[I]], tuple[M, Sequence[R]]]


class Overloaded(RuntimeError):
    """The queue is full: the caller should answer 503 and the client retry later."""


class BatcherClosed(RuntimeError):
    """The batcher was stopped (server shutting down) before the job ran."""


class RequestTimeout(RuntimeError):
    """The caller's time limit ran out before its results were ready; its queued work was dropped."""

    def __init__(self, message: str, timeout_s: float) -> None:
        super().__init__(message)
        self.timeout_s = timeout_s


class ClientDisconnected(RuntimeError):
    """The caller's client went away before its results were ready; its queued work was dropped."""


@dataclass
class BatcherStats:
    """Counters for tests, /v1/stats and the load test (mutated on the event loop only)."""

    requests: int = 0  # jobs submitted
    items: int = 0  # items submitted
    batches: int = 0  # model calls that succeeded
    batched_items: int = 0  # items run in those calls
    merged_batches: int = 0  # model calls that carried more than one request
    max_requests_in_batch: int = 0
    max_items_in_batch: int = 0
    failed_batches: int = 0
    rejected: int = 0  # jobs refused because the queue was full
    timed_out: int = 0  # jobs whose caller's time limit ran out
    disconnected: int = 0  # jobs whose client went away
    abandoned: int = 0  # jobs given up by their caller (timeout, disconnect, cancellation) before resolving
    dropped_items: int = 0  # items of abandoned jobs that never reached the model

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["mean_items_per_batch"] = round(self.batched_items / self.batches, 2) if self.batches else 0.0
        return row


@dataclass
class _Job(Generic[I]):
    items: list[I]
    cost: int
    future: asyncio.Future = field(repr=False)
    queued: bool = True  # its cost still counts in the batcher's queued units
    ran: bool = False  # handed to the model (an abandoned job that ran is not "dropped")


class MicroBatcher(Generic[I, R, M]):
    """Collects jobs from concurrent callers and runs them in merged batches.

    `run(items) -> (model, results)` is called in `executor` (one worker thread
    keeps model calls serial: the tokenizer is not thread-safe and two calls on
    the same CPU cores would only slow each other down). `cost(item)` is how
    many of the `max_batch` units an item takes (1 per paragraph by default).
    """

    def __init__(
        self,
        run: Runner,
        *,
        max_batch: int = 256,
        max_wait_ms: float = 2.0,
        max_queue: int = 8192,
        cost: Callable[[I], int] | None = None,
        executor: Executor | None = None,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self._run = run
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._cost = cost or (lambda item: 1)
        self._executor = executor
        self.name = name
        self.stats = BatcherStats()
        self._queue: asyncio.Queue[_Job] | None = None
        self._queued_cost = 0
        self._task: asyncio.Task | None = None
        self._taken: list[_Job] = []  # jobs off the queue, not resolved yet (the batch and a carried job)
        self._closed = False

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Start the collector task; call from inside the running event loop."""
        if self._task is not None:
            raise RuntimeError(f"{self.name} already started")
        self._queue = asyncio.Queue()
        self._closed = False
        self._task = asyncio.get_running_loop().create_task(self._collect(), name=f"{self.name}-collector")

    async def stop(self) -> None:
        """Stop collecting; jobs still queued or running fail with BatcherClosed."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        pending = list(self._taken)
        while self._queue is not None and not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for job in pending:
            if not job.future.done():
                job.future.set_exception(BatcherClosed(f"{self.name} stopped before this request ran"))
        self._taken = []
        self._queued_cost = 0

    @property
    def queued(self) -> int:
        """Units waiting for a batch (not counting the batch that is running)."""
        return self._queued_cost

    # -- submitting --------------------------------------------------------

    async def submit(
        self,
        items: Sequence[I],
        *,
        timeout: float | None = None,
        client_gone: Callable[[], Awaitable[object]] | None = None,
    ) -> tuple[M, list[R]]:
        """Results for `items` (in order) and the model that produced them.

        timeout: seconds this call may take in all (queue + model); then RequestTimeout.
        client_gone: makes an awaitable that completes when the caller's client goes
            away (an HTTP server: the ASGI disconnect message); then ClientDisconnected.
        Either way, and when this coroutine is cancelled, the job is dropped: its
        items never reach the model unless their batch is already running.
        """
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if self._queue is None or self._closed:
            raise BatcherClosed(f"{self.name} is not running")
        items = list(items)
        if not items:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._run_list, items)
        cost = sum(max(1, int(self._cost(item))) for item in items)
        if self._queued_cost + cost > self.max_queue and self._queued_cost > 0:
            self.stats.rejected += 1
            raise Overloaded(f"{self.name}: {self._queued_cost} units already queued (limit {self.max_queue})")
        job = _Job(items=items, cost=cost, future=asyncio.get_running_loop().create_future())
        self.stats.requests += 1
        self.stats.items += len(items)
        self._queued_cost += cost
        self._queue.put_nowait(job)
        try:
            return await self._wait(job, timeout, client_gone)
        finally:
            if not job.future.done():  # timed out, client gone or cancelled: drop the job
                job.future.cancel()
            if job.future.cancelled():
                self._abandon(job)

    async def _wait(
        self, job: _Job, timeout: float | None, client_gone: Callable[[], Awaitable[object]] | None
    ) -> tuple[M, list[R]]:
        if timeout is None and client_gone is None:
            return await job.future  # cancelling the caller cancels the future too
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        watch = None if client_gone is None else asyncio.ensure_future(client_gone())
        try:
            while deadline is None or loop.time() < deadline:
                waiting = [job.future] if watch is None else [job.future, watch]
                remaining = None if deadline is None else deadline - loop.time()
                # asyncio.wait, unlike wait_for, leaves the future alone when the wait runs out
                await asyncio.wait(waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if job.future.done():
                    return job.future.result()
                if watch is not None and watch.done():
                    error = None if watch.cancelled() else watch.exception()
                    if error is None:
                        self.stats.disconnected += 1
                        raise ClientDisconnected(f"{self.name}: the client disconnected")
                    log.warning("%s: watching the client failed (%s); waiting without it", self.name, error)
                    watch = None
        finally:
            if watch is not None and not watch.done():
                watch.cancel()
        self.stats.timed_out += 1
        raise RequestTimeout(f"{self.name}: no result within {timeout:g} s", float(timeout or 0))

    def _abandon(self, job: _Job) -> None:
        """Book-keeping for a job its caller gave up: its units leave the queue count at once."""
        self.stats.abandoned += 1
        if job.queued:
            job.queued = False
            self._queued_cost -= job.cost
        if not job.ran:
            self.stats.dropped_items += len(job.items)

    def _run_list(self, items: list[I]) -> tuple[M, list[R]]:
        model, results = self._run(items)
        return model, list(results)

    # -- collecting --------------------------------------------------------

    async def _next_job(self, timeout: float | None) -> _Job | None:
        """The next job still wanted by its caller, or None when `timeout` runs out."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if not self._queue.empty():
                job = self._queue.get_nowait()
            elif deadline is None:
                job = await self._queue.get()
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    return None
            if job.queued:
                job.queued = False
                self._queued_cost -= job.cost
            if not job.future.done():  # a caller that went away cancelled its future: skip it
                return job

    async def _collect(self) -> None:
        carry: _Job | None = None
        loop = asyncio.get_running_loop()
        while True:
            first = carry if carry is not None and not carry.future.done() else await self._next_job(None)
            assert first is not None
            carry = None
            batch, cost = [first], first.cost
            self._taken = batch  # the same list: stop() fails whatever is in it
            deadline = loop.time() + self.max_wait
            while cost < self.max_batch:
                job = await self._next_job(max(0.0, deadline - loop.time()))
                if job is None:
                    break
                if cost + job.cost > self.max_batch:
                    carry = job  # would overflow: it opens the next batch
                    self._taken = batch + [carry]
                    break
                batch.append(job)
                cost += job.cost
            await self._run_batch(batch)
            self._taken = [carry] if carry else []

    async def _run_batch(self, batch: list[_Job]) -> None:
        # a caller may have given up while the batch was being assembled: drop its job
        batch = [job for job in batch if not job.future.done()]
        if not batch:
            return
        for job in batch:
            job.ran = True
        items = [item for job in batch for item in job.items]
        try:
            model, results = await asyncio.get_running_loop().run_in_executor(self._executor, self._run_list, items)
            if len(results) != len(items):
                raise RuntimeError(f"{self.name}: runner returned {len(results)} results for {len(items)} items")
        except Exception as err:  # noqa: BLE001 - handed to the callers below
            self.stats.failed_batches += 1
            if len(batch) > 1:
                # One bad request must not fail the others merged with it: retry each alone.
                log.warning(
                    "%s: merged batch of %d requests failed (%s); retrying them one by one", self.name, len(batch), err
                )
                for job in batch:
                    if not job.future.done():
                        await self._run_batch([job])
                return
            log.exception("%s: batch failed", self.name)
            if not batch[0].future.done():
                batch[0].future.set_exception(err)
            return
        self.stats.batches += 1
        self.stats.batched_items += len(items)
        self.stats.max_items_in_batch = max(self.stats.max_items_in_batch, len(items))
        self.stats.max_requests_in_batch = max(self.stats.max_requests_in_batch, len(batch))
        if len(batch) > 1:
            self.stats.merged_batches += 1
        offset = 0
        for job in batch:
            n = len(job.items)
            if not job.future.done():
                job.future.set_result((model, results[offset : offset + n]))
            offset += n
