"""HTTP API over a tagger directory: tag paragraphs, analyse documents, hot-swap models.

`create_app(model_dir)` is an app factory: everything (the loaded model, the
micro-batchers, the watcher) lives on `app.state` and is created in the
lifespan, so tests can run several apps side by side and nothing loads at import.

Concurrency model: one worker thread runs every model call (a predictor is not
meant for concurrent use, and two calls on the same few CPU cores only slow
each other down); the event loop stays free to accept requests, which the micro-batchers
merge while the model is busy. Model loads run on a second thread, so a reload
never stalls serving.

Hot swap: the served model is one `LoadedModel` reference. Each batch reads it
once, so a batch (and therefore a request, which is never split) runs on one
model from start to end; a reload loads the new model fully, then replaces the
reference in one assignment. A failed load is logged and the old model keeps
serving.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from inference.batching import BatcherClosed, MicroBatcher, Overloaded
from policylens.document import Document
from policylens.paths import MODELS_DIR
from policylens.tagger.model_dir import read_pointer

log = logging.getLogger("policylens.server")

DEFAULT_MODEL_DIR = MODELS_DIR / "taggers" / "default"
API_VERSION = "1"
# Files whose change means "a new model is in this directory".
_WATCHED_FILES = ("policylens.json", "model.safetensors", "config.json")
# Batch sizes are counted in units of this many characters (a typical paragraph; a
# 20,000-character text is 50 units), so one model call stays bounded in work,
# not just in the number of texts.
_CHARS_PER_UNIT = 400


def _cost(text: str) -> int:
    return max(1, math.ceil(len(text) / _CHARS_PER_UNIT))


# ---------------------------------------------------------------------------
# request / response schemas
# ---------------------------------------------------------------------------


def _not_blank(text: str) -> str:
    if not text.strip():
        raise PydanticCustomError("blank_text", "text is empty or only whitespace")
    return text


Text = Annotated[str, AfterValidator(_not_blank)]

_EXAMPLE_PARAGRAPHS = [
    "加快5G网络和千兆光网建设，推进5G基站共建共享，拓展工业互联网应用场景。",
    "加大对中小微企业的融资支持，落实减税降费政策，培育一批专精特新企业。",
    "实施工业领域碳达峰行动，推动钢铁、建材等重点行业节能降碳改造。",
]


class TagRequest(BaseModel):
    """Paragraphs to tag; each is scored on its own (long ones are windowed, never truncated)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"paragraphs": _EXAMPLE_PARAGRAPHS}]})

    paragraphs: list[Text] = Field(
        min_length=1,
        description="Paragraph texts (Simplified or Traditional Chinese). At most `max_batch` per request, "
        "each at most `max_chars` characters (see GET /v1/model).",
    )


class ParagraphResult(BaseModel):
    labels: list[str] = Field(description="Labels whose calibrated score reaches the model's threshold; may be empty.")
    scores: dict[str, float] = Field(description="Calibrated probability per label of the taxonomy.")


class TagResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model_version": "2024-06-01-e5small",
                    "results": [{"labels": ["5g"], "scores": {"5g": 0.97, "sme": 0.02, "carbon": 0.01, "supply_chain": 0.11}}],
                }
            ]
        }
    )

    model_version: str = Field(description="Version of the model that produced every result of this response.")
    results: list[ParagraphResult] = Field(description="One result per input paragraph, in input order.")


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Text = Field(max_length=200, description="Caller's document id; paragraph ids are `{id}#{index}`.")
    text: Text = Field(description="Whole document text; it is segmented into paragraphs server-side.")
    title: str | None = Field(default=None, description="Title; when absent, a title line is detected in the text.")


class AnalyzeRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "documents": [
                        {
                            "id": "doc-1",
                            "title": "关于推动工业绿色发展的通知",
                            "text": "关于推动工业绿色发展的通知\n一、总体要求\n" + "\n".join(_EXAMPLE_PARAGRAPHS),
                        }
                    ]
                }
            ]
        },
    )

    documents: list[DocumentIn] = Field(
        min_length=1, description="Documents to analyse; ids must be unique within the request."
    )

    @field_validator("documents")
    @classmethod
    def _unique_ids(cls, documents: list[DocumentIn]) -> list[DocumentIn]:
        seen: dict[str, int] = {}
        for index, document in enumerate(documents):
            if document.id in seen:
                raise PydanticCustomError(
                    "duplicate_id",
                    "documents[{index}].id '{id}' repeats documents[{first}].id; ids must be unique",
                    {"index": index, "id": document.id, "first": seen[document.id]},
                )
            seen[document.id] = index
        return documents


_EXAMPLE_ANALYSIS = {
    "id": "doc-1",
    "title": "关于推动工业绿色发展的通知",
    "source": "api",
    "model_version": "2024-06-01-e5small",
    "labels": ["carbon"],
    "domains": {
        "carbon": {"label": "carbon", "paragraphs": 1, "share": 0.33, "char_share": 0.31, "max_score": 0.93,
                   "evidence": [{"paragraph_id": "doc-1#4", "index": 4, "score": 0.93, "excerpt": _EXAMPLE_PARAGRAPHS[2]}]},
    },
    "summary": {"text": "……", "sentences": [{"text": "……", "paragraph_id": "doc-1#4", "start": 120, "end": 152}]},
    "summary_error": None,
    "n_paragraphs": 5,
    "n_body_paragraphs": 3,
    "paragraphs": [{"id": "doc-1#4", "index": 4, "kind": "body", "text": _EXAMPLE_PARAGRAPHS[2], "labels": ["carbon"],
                    "scores": {"5g": 0.01, "sme": 0.03, "carbon": 0.93, "supply_chain": 0.05}}],
    "meta": {},
}


class AnalyzeResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model_version": "2024-06-01-e5small", "documents": [_EXAMPLE_ANALYSIS]}]}
    )

    model_version: str = Field(description="Version of the model that produced every analysis of this response.")
    documents: list[dict[str, Any]] = Field(
        description="One analysis per input document, in input order: paragraph tags, document-level "
        "aggregation and summary (DocumentAnalysis.to_dict())."
    )


class LabelInfo(BaseModel):
    id: str
    name_zh: str
    name_en: str
    description: str = ""


class ModelInfo(BaseModel):
    version: str
    model_dir: str
    loaded_at: float = Field(description="Unix time the served model finished loading.")
    taxonomy: dict[str, Any] = Field(description="Taxonomy name and version.")
    labels: list[LabelInfo]
    thresholds: dict[str, float] = Field(description="Per-label decision threshold on calibrated scores.")
    temperature: dict[str, float] = Field(description="Per-label calibration temperature.")
    metrics: dict[str, Any] = Field(description="Evaluation metrics stored with the model.")
    limits: dict[str, int] = Field(description="Request limits of this server.")
    reload: dict[str, Any] = Field(description="Hot-swap state: watched source, last reload, last error.")


class Health(BaseModel):
    status: str = "ok"
    model_version: str


class ReloadResult(BaseModel):
    status: str = Field(description="`reloaded`, `unchanged` or `failed`.")
    model_version: str = Field(description="Version served after this call.")
    previous_version: str | None = None
    model_dir: str
    error: str | None = None


class ErrorBody(BaseModel):
    message: str = Field(description="One line naming the item and the problem.")
    detail: list[dict[str, Any]] = Field(description="Every problem: `loc` (where), `msg` (why), `type`.")


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


class ApiError(Exception):
    """A client or server error with the same body shape as validation errors."""

    def __init__(self, status: int, errors: list[dict[str, Any]], headers: dict[str, str] | None = None) -> None:
        super().__init__(errors[0]["msg"] if errors else str(status))
        self.status = status
        self.errors = errors
        self.headers = headers


def _where(loc: Sequence[Any]) -> str:
    """('body', 'documents', 2, 'text') -> 'documents[2].text'."""
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _error_response(status: int, errors: list[dict[str, Any]], headers: dict[str, str] | None = None) -> JSONResponse:
    clean = []
    for error in errors:
        row = {"loc": list(error.get("loc", [])), "msg": str(error.get("msg", "")), "type": error.get("type", "error")}
        value = error.get("input")
        if value is not None and not isinstance(value, (dict, list)) and len(repr(value)) <= 80:
            row["input"] = value  # short inputs help; never echo a 20,000-character text back
        clean.append(row)
    first = clean[0] if clean else {"loc": [], "msg": "error"}
    message = f"{_where(first['loc'])}: {first['msg']}"
    if len(clean) > 1:
        message += f" (and {len(clean) - 1} more)"
    return JSONResponse({"message": message, "detail": clean}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(422, list(exc.errors()))

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc.status, exc.errors, exc.headers)


def _check_limits(
    field: str, texts: Sequence[str], *, max_items: int, max_chars: int, max_total: int, text_field: str | None = None
) -> None:
    """413 naming the limit when a request is bigger than this server accepts."""
    if len(texts) > max_items:
        raise ApiError(413, [{
            "loc": ["body", field], "type": "too_many_items",
            "msg": f"{len(texts)} {field} in one request; the limit is {max_items}: split the batch",
        }])
    total = sum(map(len, texts))
    if total > max_total:
        raise ApiError(413, [{
            "loc": ["body", field], "type": "request_too_large",
            "msg": f"{total} characters in all; the limit per request is {max_total}: split the batch",
        }])
    errors = []
    for index, text in enumerate(texts):
        if len(text) > max_chars:
            loc = ["body", field, index] + ([text_field] if text_field else [])
            errors.append({
                "loc": loc, "type": "text_too_long",
                "msg": f"text has {len(text)} characters; the limit is {max_chars}",
            })
    if errors:
        raise ApiError(413, errors)


# ---------------------------------------------------------------------------
# the served model and its hot swap
# ---------------------------------------------------------------------------


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


def _default_factory(model_dir: Path, num_threads: int | None) -> Any:
    from inference.predictor import Predictor

    return Predictor(model_dir, num_threads=num_threads)


class ModelService:
    """Owns the served model, the batchers, the inference thread and the watcher."""

    def __init__(
        self,
        model_dir: Path | None,
        *,
        registry_pointer: Path | None,
        predictor_factory: Callable[[Path], Any],
        max_batch: int,
        max_wait_ms: float,
        max_queue: int,
        poll_seconds: float,
        preload_summarizer: bool = True,
    ) -> None:
        if model_dir is None and registry_pointer is None:
            raise ValueError("give a model directory or a registry pointer")
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.registry_pointer = Path(registry_pointer) if registry_pointer is not None else None
        self._factory = predictor_factory
        self._preload_summarizer = preload_summarizer
        self.poll_seconds = poll_seconds
        self._infer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policylens-infer")
        self._load_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policylens-load")
        self.tag_batcher: MicroBatcher[str, Any, LoadedModel] = MicroBatcher(
            self._tag_batch, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
            cost=_cost, executor=self._infer_pool, name="tag",
        )
        self.analyze_batcher: MicroBatcher[Document, Any, LoadedModel] = MicroBatcher(
            self._analyze_batch, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
            cost=lambda doc: _cost(doc.text), executor=self._infer_pool,
            name="analyze",
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
                return self._failed(previous, f"{target}: {type(err).__name__}: {err}", target)
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


# ---------------------------------------------------------------------------
# the app
# ---------------------------------------------------------------------------


def _service(request: Request) -> ModelService:
    return request.app.state.service


def _serving(request: Request) -> LoadedModel:
    model = _service(request).current
    assert model is not None
    return model


async def _submit(batcher: MicroBatcher, items: list[Any]) -> tuple[LoadedModel, list[Any]]:
    try:
        return await batcher.submit(items)
    except Overloaded as err:
        raise ApiError(503, [{"loc": [], "type": "overloaded", "msg": f"server busy ({err}); retry shortly"}],
                       headers={"Retry-After": "1"}) from None
    except BatcherClosed as err:
        raise ApiError(503, [{"loc": [], "type": "shutting_down", "msg": str(err)}]) from None
    except Exception as err:  # noqa: BLE001 - the model failed on this request
        log.exception("prediction failed")
        message = f"model failed: {type(err).__name__}: {err}"
        raise ApiError(500, [{"loc": [], "type": "model_error", "msg": message}]) from None


_ERRORS = {
    413: {"model": ErrorBody, "description": "Too many items, or a text longer than the limit."},
    422: {"model": ErrorBody, "description": "Malformed body: missing or empty list, blank text, wrong type."},
    503: {"model": ErrorBody, "description": "Queue full or shutting down; retry."},
}


def create_app(
    model_dir: Path | str | None,
    *,
    registry_pointer: Path | str | None = None,
    max_batch: int = 256,
    max_chars: int = 20000,
    max_documents: int = 64,
    max_total_chars: int = 500_000,
    max_wait_ms: float = 2.0,
    max_queue: int = 8192,
    poll_seconds: float = 5.0,
    num_threads: int | None = None,
    enable_admin: bool = True,
    preload_summarizer: bool = True,
    predictor_factory: Callable[[Path], Any] | None = None,
) -> FastAPI:
    """A FastAPI app serving the tagger in `model_dir` (or the one `registry_pointer` names).

    max_batch: most paragraphs per /v1/tag request; also the size of one model call, in
        paragraph-sized units of 400 characters (a longer request runs alone).
    max_documents: most documents per /v1/analyze request.
    max_chars: longest paragraph (/v1/tag) or document text (/v1/analyze) accepted.
    max_total_chars: most characters in one request (bounds the work one request can ask for).
    max_wait_ms: how long a batch waits for more requests before it runs.
    poll_seconds: how often the pointer / model files are checked for a new model (0: never).
    preload_summarizer: load the summariser with the model (else on the first /v1/analyze).
    predictor_factory: builds a predictor from a dir (tests inject doubles; default Predictor).
    """
    factory = predictor_factory or (lambda path: _default_factory(path, num_threads))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = ModelService(
            Path(model_dir) if model_dir is not None else None,
            registry_pointer=Path(registry_pointer) if registry_pointer is not None else None,
            predictor_factory=factory, max_batch=max_batch, max_wait_ms=max_wait_ms,
            max_queue=max_queue, poll_seconds=poll_seconds, preload_summarizer=preload_summarizer,
        )
        await service.start()
        app.state.service = service
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="policylens API",
        version=API_VERSION,
        description=(
            "Tags paragraphs of Chinese industrial-policy documents with policy domains "
            "(multi-label, none allowed) and analyses whole documents, fully offline.\n\n"
            "Concurrent requests are micro-batched into shared model calls; every response names "
            "the `model_version` that produced it (also in the `X-Model-Version` header). "
            "Size limits answer 413, malformed bodies 422; error bodies carry a one-line `message` "
            "naming the item and a `detail` list."
        ),
        lifespan=lifespan,
    )
    _install_error_handlers(app)

    @app.middleware("http")
    async def _version_header(request: Request, call_next: Callable) -> Response:
        """Every response names the model serving now, errors included (endpoints set the one they used)."""
        response = await call_next(request)
        service = getattr(request.app.state, "service", None)
        if "x-model-version" not in response.headers and service is not None and service.current is not None:
            response.headers["X-Model-Version"] = service.current.version
        return response

    limits = {
        "max_batch": max_batch, "max_chars": max_chars, "max_documents": max_documents,
        "max_total_chars": max_total_chars,
    }

    @app.post("/v1/tag", response_model=TagResponse, responses=_ERRORS, tags=["tagging"], summary="Tag paragraphs")
    async def tag(body: TagRequest, request: Request, response: Response) -> TagResponse:
        """Labels and calibrated scores for each paragraph, in input order."""
        _check_limits("paragraphs", body.paragraphs, max_items=max_batch, max_chars=max_chars, max_total=max_total_chars)
        model, results = await _submit(_service(request).tag_batcher, body.paragraphs)
        response.headers["X-Model-Version"] = model.version
        return TagResponse(
            model_version=model.version,
            results=[ParagraphResult(labels=list(r.labels), scores=dict(r.scores)) for r in results],
        )

    @app.post("/v1/analyze", response_model=AnalyzeResponse, responses=_ERRORS, tags=["tagging"],
              summary="Analyse whole documents")
    async def analyze(body: AnalyzeRequest, request: Request, response: Response) -> AnalyzeResponse:
        """Segments each document, tags its paragraphs, aggregates them per document and summarises it."""
        _check_limits("documents", [d.text for d in body.documents], max_items=max_documents,
                      max_chars=max_chars, max_total=max_total_chars, text_field="text")
        documents = [Document(id=d.id, text=d.text, title=d.title, source="api") for d in body.documents]
        model, analyses = await _submit(_service(request).analyze_batcher, documents)
        response.headers["X-Model-Version"] = model.version
        return AnalyzeResponse(model_version=model.version, documents=[a.to_dict() for a in analyses])

    @app.get("/v1/model", response_model=ModelInfo, tags=["model"], summary="The served model")
    async def model_info(request: Request, response: Response) -> ModelInfo:
        """Version, taxonomy, thresholds and stored metrics of the model serving now."""
        model = _serving(request)
        meta = model.predictor.meta
        ids = meta.taxonomy.ids
        response.headers["X-Model-Version"] = model.version
        return ModelInfo(
            version=model.version,
            model_dir=str(model.model_dir),
            loaded_at=model.loaded_at,
            taxonomy={"name": meta.taxonomy.name, "version": meta.taxonomy.version},
            labels=[LabelInfo(id=l.id, name_zh=l.name_zh, name_en=l.name_en, description=l.description)
                    for l in meta.taxonomy.labels],
            thresholds=dict(zip(ids, map(float, meta.thresholds))),
            temperature=dict(zip(ids, map(float, meta.temperature))),
            metrics=meta.metrics,
            limits=limits,
            reload=_service(request).reload_state(),
        )

    @app.get("/healthz", response_model=Health, tags=["ops"], summary="Liveness")
    async def healthz(request: Request, response: Response) -> Health:
        model = _serving(request)
        response.headers["X-Model-Version"] = model.version
        return Health(model_version=model.version)

    @app.get("/v1/stats", tags=["ops"], summary="Micro-batching counters")
    async def stats(request: Request) -> dict[str, Any]:
        """How requests were merged into model calls (for tuning max_batch / max_wait_ms)."""
        service = _service(request)
        return {
            "model_version": _serving(request).version,
            "tag": service.tag_batcher.stats.to_dict() | {"queued": service.tag_batcher.queued},
            "analyze": service.analyze_batcher.stats.to_dict() | {"queued": service.analyze_batcher.queued},
            "reload": service.reload_state(),
        }

    if enable_admin:
        @app.post("/v1/admin/reload", response_model=ReloadResult, tags=["ops"], summary="Reload the model now",
                  responses={500: {"model": ReloadResult,
                                   "description": "The new model failed to load; the old one keeps serving."}})
        async def admin_reload(
            request: Request,
            force: Annotated[bool, Query(description="Reload even if the model files look unchanged.")] = True,
        ) -> Any:
            """Loads the model the registry pointer (or model dir) names, then swaps it in atomically."""
            result = await _service(request).reload(force=force)
            if result.status == "failed":
                return JSONResponse(result.model_dump(), status_code=500)
            return result

    return app


def create_app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` / several workers: settings come from POLICYLENS_SERVE_*."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    env = os.environ
    pointer = env.get("POLICYLENS_SERVE_REGISTRY")
    return create_app(
        env.get("POLICYLENS_SERVE_MODEL") or (None if pointer else DEFAULT_MODEL_DIR),
        registry_pointer=Path(pointer) if pointer else None,
        max_batch=int(env.get("POLICYLENS_SERVE_MAX_BATCH", 256)),
        max_chars=int(env.get("POLICYLENS_SERVE_MAX_CHARS", 20000)),
        max_total_chars=int(env.get("POLICYLENS_SERVE_MAX_TOTAL_CHARS", 500_000)),
        max_wait_ms=float(env.get("POLICYLENS_SERVE_MAX_WAIT_MS", 2.0)),
        poll_seconds=float(env.get("POLICYLENS_SERVE_POLL_SECONDS", 5.0)),
        num_threads=int(env["POLICYLENS_SERVE_THREADS"]) if env.get("POLICYLENS_SERVE_THREADS") else None,
    )
