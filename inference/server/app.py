"""HTTP API over a tagger directory: tag paragraphs, analyse documents, hot-swap models.

`create_app(model_dir)` is an app factory: everything (the loaded model, the
micro-batchers, the watcher) lives on `app.state` and is created in the
lifespan, so tests can run several apps side by side and nothing loads at import.

This module only wires routes to the pieces: schemas.py (request and response
bodies), errors.py (error bodies and size checks), service.py (the served model,
micro-batching and hot swap) and limits.py (ServerLimits, every limit's default).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse

from inference.batching import (
    BatcherClosed,
    ClientDisconnected,
    MicroBatcher,
    Overloaded,
    RequestTimeout,
)
from inference.server.desk import DeskBackend, DeskConfig
from inference.server.desk.core import Desk
from inference.server.desk.routes import install_desk
from inference.server.errors import (
    ERROR_RESPONSES,
    ApiError,
    BodyGuard,
    check_limits,
    install_error_handlers,
)
from inference.server.limits import DEFAULT_LIMITS, ServerLimits
from inference.server.schemas import (
    AnalyzeRequest,
    AnalyzeResponse,
    Health,
    LabelInfo,
    ModelInfo,
    ParagraphResult,
    ReloadResult,
    TagRequest,
    TagResponse,
)
from inference.server.service import LoadedModel, ModelService, default_predictor
from policylens.document import Document
from policylens.paths import TAGGER_DIR

log = logging.getLogger("policylens.server")

DEFAULT_MODEL_DIR = TAGGER_DIR  # kept as a name: `policylens serve` and older callers import it from here
API_VERSION = "1"
_DESCRIPTION = (
    "Tags paragraphs of Chinese industrial-policy documents with policy domains "
    "(multi-label, none allowed) and analyses whole documents, fully offline.\n\n"
    "Concurrent requests are micro-batched into shared model calls; every response names "
    "the `model_version` that produced it (also in the `X-Model-Version` header). "
    "Size limits answer 413, malformed bodies 422, a body that is not UTF-8 or nested too deep 400, "
    "a Content-Type other than application/json 415; error bodies carry a one-line `message` "
    "naming the item and a `detail` list."
)


def _service(request: Request) -> ModelService:
    return request.app.state.service


def _serving(request: Request) -> LoadedModel:
    model = _service(request).current
    assert model is not None
    return model


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects: its body is read, so the next ASGI message is the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.1)  # not expected after the body; never spin


async def _submit(
    batcher: MicroBatcher, items: list[Any], request: Request | None = None, limits: ServerLimits = DEFAULT_LIMITS
) -> tuple[LoadedModel, list[Any]]:
    """Run `items` through a batcher; its failures become error bodies (503 retryable, 500 model error).

    The request's queued work is dropped when its client disconnects or its time limit
    (limits.request_timeout_s) runs out; the latter answers 503 with Retry-After.
    """
    try:
        return await batcher.submit(
            items, timeout=limits.request_timeout_s or None,
            client_gone=(lambda: _client_gone(request)) if request is not None else None,
        )
    except RequestTimeout as err:
        raise ApiError(503, [{"loc": [], "type": "timeout",
                              "msg": f"no result within the server's limit of {err.timeout_s:g} s; retry later"}],
                       headers={"Retry-After": str(limits.retry_after_s)}) from None
    except ClientDisconnected as err:  # nobody reads this answer; 499 as in nginx's logs
        raise ApiError(499, [{"loc": [], "type": "client_disconnected", "msg": str(err)}]) from None
    except Overloaded as err:
        raise ApiError(503, [{"loc": [], "type": "overloaded", "msg": f"server busy ({err}); retry shortly"}],
                       headers={"Retry-After": "1"}) from None
    except BatcherClosed as err:
        raise ApiError(503, [{"loc": [], "type": "shutting_down", "msg": str(err)}]) from None
    except Exception as err:  # noqa: BLE001 - the model failed on this request
        log.exception("prediction failed")
        message = f"model failed: {type(err).__name__}: {err}"
        raise ApiError(500, [{"loc": [], "type": "model_error", "msg": message}]) from None


def _lifespan(
    model_dir: Path | None,
    registry_pointer: Path | None,
    factory: Callable[[Path], Any],
    limits: ServerLimits,
    preload_summarizer: bool,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: the model loads when the server starts, never at import."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = ModelService(
            model_dir, registry_pointer=registry_pointer, predictor_factory=factory, limits=limits,
            preload_summarizer=preload_summarizer,
        )
        await service.start()
        app.state.service = service
        await app.state.desk.start(service)
        try:
            yield
        finally:
            app.state.desk.stop()
            await service.stop()

    return lifespan


def _add_version_header(app: FastAPI) -> None:
    @app.middleware("http")
    async def _version_header(request: Request, call_next: Callable) -> Response:
        """Every response names the model serving now, errors included (endpoints set the one they used)."""
        response = await call_next(request)
        service = getattr(request.app.state, "service", None)
        if "x-model-version" not in response.headers and service is not None and service.current is not None:
            response.headers["X-Model-Version"] = service.current.version
        return response


def _add_tagging_routes(app: FastAPI, limits: ServerLimits) -> None:
    @app.post("/v1/tag", response_model=TagResponse, responses=ERROR_RESPONSES, tags=["tagging"],
              summary="Tag paragraphs")
    async def tag(body: TagRequest, request: Request, response: Response) -> TagResponse:
        """Labels and calibrated scores for each paragraph, in input order."""
        check_limits("paragraphs", body.paragraphs, max_items=limits.max_batch, max_chars=limits.max_chars,
                     max_total=limits.max_total_chars)
        model, results = await _submit(_service(request).tag_batcher, body.paragraphs, request, limits)
        response.headers["X-Model-Version"] = model.version
        return TagResponse(
            model_version=model.version,
            results=[ParagraphResult(labels=list(r.labels), scores=dict(r.scores)) for r in results],
        )

    @app.post("/v1/analyze", response_model=AnalyzeResponse, responses=ERROR_RESPONSES, tags=["tagging"],
              summary="Analyse whole documents")
    async def analyze(body: AnalyzeRequest, request: Request, response: Response) -> AnalyzeResponse:
        """Segments each document, tags its paragraphs, aggregates them per document and summarises it."""
        check_limits("documents", [d.text for d in body.documents], max_items=limits.max_documents,
                     max_chars=limits.max_chars, max_total=limits.max_total_chars, text_field="text")
        documents = [Document(id=d.id, text=d.text, title=d.title, source="api") for d in body.documents]
        model, analyses = await _submit(_service(request).analyze_batcher, documents, request, limits)
        response.headers["X-Model-Version"] = model.version
        return AnalyzeResponse(model_version=model.version, documents=[a.to_dict() for a in analyses])


def _add_model_route(app: FastAPI, limits: ServerLimits) -> None:
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
            limits=limits.public(),
            reload=_service(request).reload_state(),
        )


def _add_ops_routes(app: FastAPI) -> None:
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


def _add_admin_routes(app: FastAPI) -> None:
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


def create_app(
    model_dir: Path | str | None,
    *,
    registry_pointer: Path | str | None = None,
    max_batch: int = DEFAULT_LIMITS.max_batch,
    max_chars: int = DEFAULT_LIMITS.max_chars,
    max_documents: int = DEFAULT_LIMITS.max_documents,
    max_total_chars: int = DEFAULT_LIMITS.max_total_chars,
    max_wait_ms: float = DEFAULT_LIMITS.max_wait_ms,
    max_queue: int = DEFAULT_LIMITS.max_queue,
    poll_seconds: float = DEFAULT_LIMITS.poll_seconds,
    request_timeout_s: float = DEFAULT_LIMITS.request_timeout_s,
    retry_after_s: int = DEFAULT_LIMITS.retry_after_s,
    max_json_depth: int = DEFAULT_LIMITS.max_json_depth,
    num_threads: int | None = None,
    enable_admin: bool = True,
    preload_summarizer: bool = True,
    predictor_factory: Callable[[Path], Any] | None = None,
    desk_backend: DeskBackend | None = None,
    desk_config: DeskConfig | None = None,
) -> FastAPI:
    """A FastAPI app serving the tagger in `model_dir` (or the one `registry_pointer` names).

    max_batch ... poll_seconds: see ServerLimits (validated there, so a bad value fails here,
        not when the server starts).
    preload_summarizer: load the summariser with the model (else on the first /v1/analyze).
    predictor_factory: builds a predictor from a dir (tests inject doubles; default Predictor).
    desk_backend, desk_config: the review desk at `/` (inference/server/desk/); without a backend
        (label store, retraining: `policylens serve` builds one) it is read-only.
    """
    limits = ServerLimits(
        max_batch=max_batch, max_chars=max_chars, max_documents=max_documents, max_total_chars=max_total_chars,
        max_wait_ms=max_wait_ms, max_queue=max_queue, poll_seconds=poll_seconds,
        request_timeout_s=request_timeout_s, retry_after_s=retry_after_s, max_json_depth=max_json_depth,
    )
    factory = predictor_factory or (lambda path: default_predictor(path, num_threads))
    lifespan = _lifespan(
        Path(model_dir) if model_dir is not None else None,
        Path(registry_pointer) if registry_pointer is not None else None,
        factory, limits, preload_summarizer,
    )
    app = FastAPI(title="policylens API", version=API_VERSION, description=_DESCRIPTION, lifespan=lifespan)
    install_error_handlers(app)
    # raw-body checks (415 / 400) before FastAPI parses; added first, so the version header still wraps them
    app.add_middleware(BodyGuard, max_depth=limits.max_json_depth)
    _add_version_header(app)
    _add_tagging_routes(app, limits)
    _add_model_route(app, limits)
    _add_ops_routes(app)
    if enable_admin:
        _add_admin_routes(app)
    install_desk(app, Desk(desk_config or DeskConfig(), desk_backend))
    return app


def create_app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` / several workers: settings come from POLICYLENS_SERVE_*."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    env = os.environ
    pointer = env.get("POLICYLENS_SERVE_REGISTRY")
    return create_app(
        env.get("POLICYLENS_SERVE_MODEL") or (None if pointer else DEFAULT_MODEL_DIR),
        registry_pointer=Path(pointer) if pointer else None,
        num_threads=int(env["POLICYLENS_SERVE_THREADS"]) if env.get("POLICYLENS_SERVE_THREADS") else None,
        **asdict(ServerLimits.from_env(env)),
    )
