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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
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

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["mean_items_per_batch"] = round(self.batched_items / self.batches, 2) if self.batches else 0.0
        return row


@dataclass
class _Job(Generic[I]):
    items: list[I]
    cost: int
    future: asyncio.Future = field(repr=False)


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

    async def submit(self, items: Sequence[I]) -> tuple[M, list[R]]:
        """Results for `items` (in order) and the model that produced them."""
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
        return await job.future

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
            self._queued_cost -= job.cost
            if not job.future.done():  # a client that went away cancels its future
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
