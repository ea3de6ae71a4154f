"""The served model and its hot swap: loading, micro-batched model calls, the watcher.

Concurrency model: one worker thread runs every model call (a predictor is not
meant for concurrent use, and two calls on the same few CPU cores only slow
each other down); the event loop stays free to accept requests, which the micro-batchers
merge while the model is busy. Model loads run on a second thread, so a reload
never stalls serving.

Hot swap: the served model is one `LoadedModel` reference. Each batch reads it
once, so a batch (and therefore a request, which is never split) runs on one
model from start to end; a reload loads the new model fully, then replaces the
reference in one assignment. A failed load is logged and the old model keeps
serving; so is a model that loads but fails policylens.tagger.integrity.check_model_dir
(file hashes, weights, smoke-set scores finite and in [0, 1]), and the reason is in
the reload state (`last_error`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.batching import MicroBatcher
from inference.server.limits import ServerLimits
from inference.server.schemas import ReloadResult
from policylens.document import Document
from policylens.io import InputError
from policylens.tagger.integrity import check_model_dir, first_problem
from policylens.tagger.model_dir import read_pointer
from policylens.tagger.scoring import Tagger

log = logging.getLogger("policylens.server")

# Files whose change means "a new model is in this directory".
_WATCHED_FILES = ("policylens.json", "model.safetensors", "config.json")
# Batch sizes are counted in units of this many characters (a typical paragraph; a
# 20,000-character text is 50 units), so one model call stays bounded in work,
# not just in the number of texts.
_CHARS_PER_UNIT = 400


def _cost(text: str) -> int:
    """How many of a batch's `max_batch` units a text takes."""
    return max(1, math.ceil(len(text) / _CHARS_PER_UNIT))


@dataclass(frozen=True)
class LoadedModel:
    """Everything about one loaded model; replaced as a whole, never mutated."""

    predictor: Any  # inference.predictor.Predictor (or a test double with the same methods)
    version: str
    model_dir: Path
    fingerprint: tuple
    loaded_at: float


def fingerprint(model_dir: Path) -> tuple:
    """Cheap identity of a model dir's contents (path, mtime and size of the files that matter)."""
    parts: list[Any] = [str(model_dir.resolve())]
    for name in _WATCHED_FILES:
        try:
            st = (model_dir / name).stat()
            parts.append((name, st.st_mtime_ns, st.st_size))
        except OSError:
            parts.append((name, None, None))
    return tuple(parts)


def default_predictor(model_dir: Path, num_threads: int | None) -> Any:
    """The real Predictor, imported only when a model loads (tests inject doubles instead).

    backend=None: the model's own default (policylens.json `inference.backend`, which
    `policylens train` sets to onnx when the int8 export agrees with torch), else torch.
    """
    from inference.predictor import Predictor

    return Predictor(model_dir, backend=None, num_threads=num_threads)


class ModelService:
    """Owns the served model, the batchers, the inference thread and the watcher."""

    def __init__(
        self,
        model_dir: Path | None,
        *,
        registry_pointer: Path | None,
        predictor_factory: Callable[[Path], Any],
        limits: ServerLimits,
        preload_summarizer: bool = True,
    ) -> None:
        if model_dir is None and registry_pointer is None:
            raise ValueError("give a model directory or a registry pointer")
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.registry_pointer = Path(registry_pointer) if registry_pointer is not None else None
        self._factory = predictor_factory
        self._preload_summarizer = preload_summarizer
        self.poll_seconds = limits.poll_seconds
        self._infer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policylens-infer")
        self._load_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policylens-load")
        self.tag_batcher: MicroBatcher[str, Any, LoadedModel] = MicroBatcher(
            self._tag_batch, max_batch=limits.max_batch, max_wait_ms=limits.max_wait_ms, max_queue=limits.max_queue,
            cost=_cost, executor=self._infer_pool, name="tag",
        )
        self.analyze_batcher: MicroBatcher[Document, Any, LoadedModel] = MicroBatcher(
            self._analyze_batch, max_batch=limits.max_batch, max_wait_ms=limits.max_wait_ms,
            max_queue=limits.max_queue, cost=lambda doc: _cost(doc.text), executor=self._infer_pool, name="analyze",
        )
        self.current: LoadedModel | None = None
        self._reload_lock = asyncio.Lock()
        self._watch_task: asyncio.Task | None = None
        self._failed_fingerprint: tuple | None = None
        self.reloads = 0
        self.last_error: str | None = None
        self.last_check: float | None = None

    # -- model calls (run on the inference thread) ---------------------------

    def _tag_batch(self, texts: list[str]) -> tuple[LoadedModel, list[Any]]:
        model = self.current  # read once: the whole batch runs on this model even if a swap lands now
        assert model is not None
        return model, model.predictor.predict(texts)

    def _analyze_batch(self, documents: list[Document]) -> tuple[LoadedModel, list[Any]]:
        model = self.current
        assert model is not None
        return model, model.predictor.analyze(documents)

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the inference thread, between micro-batches: model work that is not a batch of
        requests (the review desk tags a long document in chunks, and summarises) never runs beside one."""
        return await asyncio.get_running_loop().run_in_executor(self._infer_pool, fn)

    # -- loading -------------------------------------------------------------

    def target_dir(self) -> Path:
        """Where the model to serve is now: the pointer's target, else the fixed model dir."""
        if self.registry_pointer is not None and (self.registry_pointer.exists() or self.model_dir is None):
            return read_pointer(self.registry_pointer)
        assert self.model_dir is not None
        return self.model_dir

    def _load(self, model_dir: Path, fp: tuple) -> LoadedModel:
        started = time.perf_counter()
        predictor = self._factory(model_dir)
        if isinstance(predictor, Tagger):  # test doubles that are not taggers have no model dir to check
            problems = check_model_dir(model_dir, tagger=predictor)
            if problems:
                raise InputError(f"failed the model check: {first_problem(problems)}")
        version = getattr(predictor, "version", None) or predictor.meta.version or model_dir.name
        # Load "fully" before the swap: first-call allocations and the lazily loaded
        # summariser would otherwise land on the first requests after it.
        predictor.predict(["预热"])
        if self._preload_summarizer:
            getattr(predictor, "summarizer", None)
        log.info("loaded model %s from %s in %.1fs", version, model_dir, time.perf_counter() - started)
        return LoadedModel(
            predictor=predictor, version=version, model_dir=model_dir, fingerprint=fp, loaded_at=time.time()
        )

    async def start(self) -> None:
        target = self.target_dir()
        loop = asyncio.get_running_loop()
        self.current = await loop.run_in_executor(self._load_pool, self._load, target, fingerprint(target))
        self.tag_batcher.start()
        self.analyze_batcher.start()
        if self.poll_seconds > 0:
            self._watch_task = loop.create_task(self._watch(), name="policylens-model-watcher")

    async def stop(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            try:
                await self._watch_task
            except asyncio.CancelledError:
                pass
        await self.tag_batcher.stop()
        await self.analyze_batcher.stop()
        self._infer_pool.shutdown(wait=True, cancel_futures=True)
        self._load_pool.shutdown(wait=False, cancel_futures=True)

    async def reload(self, *, force: bool = False) -> ReloadResult:
        """Load the model the pointer (or model dir) names now and swap it in if it loads.

        Without `force`, an unchanged fingerprint is a no-op, and so is one whose load
        already failed (the watcher does not retry a broken model every poll).
        """
        async with self._reload_lock:
            previous = self.current
            assert previous is not None
            self.last_check = time.time()
            try:
                target = self.target_dir()
                fp = fingerprint(target)
            except (OSError, ValueError) as err:
                return self._failed(previous, str(err), None)
            if not force and (fp == previous.fingerprint or fp == self._failed_fingerprint):
                return ReloadResult(
                    status="unchanged", model_version=previous.version, model_dir=str(previous.model_dir)
                )
            try:
                loaded = await asyncio.get_running_loop().run_in_executor(self._load_pool, self._load, target, fp)
            except Exception as err:  # noqa: BLE001 - any load failure keeps the old model
                self._failed_fingerprint = fp
                why = str(err) if isinstance(err, InputError) else f"{type(err).__name__}: {err}"
                return self._failed(previous, f"{target}: {why}", target)
            self.current = loaded  # the swap: one reference assignment
            self._failed_fingerprint = None
            self.last_error = None
            self.reloads += 1
            log.info("now serving %s (was %s)", loaded.version, previous.version)
            return ReloadResult(
                status="reloaded", model_version=loaded.version, previous_version=previous.version,
                model_dir=str(loaded.model_dir),
            )

    def _failed(self, previous: LoadedModel, error: str, target: Path | None) -> ReloadResult:
        self.last_error = error
        log.error("model reload failed, still serving %s: %s", previous.version, error)
        return ReloadResult(
            status="failed", model_version=previous.version, previous_version=previous.version,
            model_dir=str(target or previous.model_dir), error=error,
        )

    async def _watch(self) -> None:
        """Poll the pointer / model files; a change triggers a background load and swap.

        A change is acted on once it has been stable for one poll, so a model dir
        still being copied in place is not loaded half-written.
        """
        pending: tuple | None = None
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                fp = fingerprint(self.target_dir())
            except (OSError, ValueError) as err:
                if self.last_error != str(err):
                    self.last_error = str(err)
                    serving = self.current.version if self.current else "-"
                    log.error("model watcher: %s (still serving %s)", err, serving)
                continue
            assert self.current is not None
            if fp in (self.current.fingerprint, self._failed_fingerprint):
                pending = None
            elif fp != pending:
                pending = fp
            else:
                pending = None
                try:
                    await self.reload()
                except Exception:  # noqa: BLE001 - the watcher must survive anything
                    log.exception("model watcher error")

    def reload_state(self) -> dict[str, Any]:
        return {
            "registry_pointer": str(self.registry_pointer) if self.registry_pointer else None,
            "watched_dir": str(self.model_dir) if self.model_dir else None,
            "poll_seconds": self.poll_seconds,
            "reloads": self.reloads,
            "last_check": self.last_check,
            "last_error": self.last_error,
        }
