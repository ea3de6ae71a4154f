"""Background work of the desk: a queue and one worker thread per runner, progress the page polls.

Why threads and not the event loop: reading a 200-page PDF and training a model are
CPU work that must never hold up a request; the page asks `GET /desk/api/jobs/{id}`
every second instead. Each runner does one job at a time, in submission order.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("policylens.desk")

STATES = ("queued", "running", "done", "failed")
_KEEP = 200  # finished jobs remembered (the newest)


@dataclass
class Job:
    """One piece of background work; `update` is called from the worker, `snapshot` from requests."""

    id: str
    kind: str
    title: str
    state: str = "queued"
    phase: str = "waiting"
    done: int | None = None
    total: int | None = None
    error: str | None = None
    result: Any = None
    notes: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def update(self, phase: str | None = None, done: int | None = None, total: int | None = None) -> None:
        with self._lock:
            if phase is not None:
                self.phase = phase
            if total is not None:
                self.total = total
            if done is not None:
                self.done = done

    def note(self, message: str) -> None:
        """Something the user should read (a file that could not be read); the job goes on."""
        with self._lock:
            self.notes.append(message)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            end = self.finished or time.time()
            return {
                "id": self.id, "kind": self.kind, "title": self.title, "state": self.state, "phase": self.phase,
                "done": self.done, "total": self.total, "error": self.error, "notes": list(self.notes),
                "result": self.result if self.state == "done" else None,
                "created": self.created, "seconds": round(end - self.started, 1) if self.started else 0.0,
            }


class JobRunner:
    """Runs submitted functions one at a time on a daemon thread; `fn(job)` reports through `job.update`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: queue.Queue[tuple[Job, Callable[[Job], Any]] | None] = queue.Queue()
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._thread = threading.Thread(target=self._work, name=f"policylens-desk-{name}", daemon=True)
        self._thread.start()

    def submit(self, kind: str, title: str, fn: Callable[[Job], Any]) -> Job:
        job = Job(id=f"{self.name}-{next(self._ids)}", kind=kind, title=title)
        with self._lock:
            self._jobs[job.id] = job
            finished = [j for j in self._jobs.values() if j.state in ("done", "failed")]
            for old in finished[:-_KEEP]:
                del self._jobs[old.id]
        self._queue.put((job, fn))
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def busy(self) -> Job | None:
        """The job queued or running now, if any."""
        with self._lock:
            return next((j for j in self._jobs.values() if j.state in ("queued", "running")), None)

    def close(self, timeout: float = 1.0) -> None:
        """Stop taking work; a running job finishes on its own (the thread is a daemon)."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job, fn = item
            with job._lock:
                job.state, job.started = "running", time.time()
            try:
                result = fn(job)
            except Exception as err:  # noqa: BLE001 - a failed job is reported on the page, the runner goes on
                log.exception("desk job %s (%s) failed", job.id, job.title)
                message = getattr(err, "message", None) or f"{type(err).__name__}: {err}"
                with job._lock:
                    job.state, job.error, job.finished = "failed", str(message), time.time()
                continue
            with job._lock:
                job.state, job.result, job.finished, job.phase = "done", result, time.time(), "done"
