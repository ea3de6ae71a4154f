"""HTTP routes of the review desk: four pages (Jinja2, autoescaped) and a small JSON API they call.

Pages: `/` inbox, `/doc/{key}` a document, `/review` the to-review queue, `/models` retrain,
gate report, promote and roll back. Static files (one CSS, one JS) are served from
`/desk/static/`: nothing is fetched from anywhere else, and the Content-Security-Policy
says so. Writes are POSTs with JSON bodies (the API's BodyGuard refuses anything else, which
also keeps other sites' forms out); each passes `require_write` first.
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, ConfigDict, Field

from inference.server.desk.backend import DeskError
from inference.server.desk.config import TOKEN_HEADER, UPLOAD_SUFFIXES
from inference.server.desk.core import EXPORT_FORMATS, Desk
from inference.server.desk.inbox import KEY
from inference.server.desk.uploads import UploadRequest, UploadSizeGuard, decode_upload
from inference.server.desk.views import document_row, domain_ids, paragraph_views
from inference.server.errors import error_response

HERE = Path(__file__).parent
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SORTS = ("title", "date", "source", "paragraphs", "reviewed", "low", "uploaded")


def _templates() -> Jinja2Templates:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda x: f"{x:.0%}"
    env.filters["clock"] = lambda t: time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else ""
    return Jinja2Templates(env=env)


TEMPLATES = _templates()


def _desk(request: Request) -> Desk:
    return request.app.state.desk


def _refuse(status: int, message: str) -> DeskError:
    return DeskError(status, message)


def require_write(request: Request) -> Desk:
    """403 with the reason unless this desk takes writes and the request carries the token (when one is set)."""
    desk = _desk(request)
    if desk.read_only:
        raise _refuse(403, f"write refused: {desk.read_only}")
    token = desk.config.write_token
    if token is not None:
        given = request.headers.get(TOKEN_HEADER, "")
        if not secrets.compare_digest(given.encode("utf-8"), token.encode("utf-8")):
            what = "no write token was sent" if not given else "the write token is wrong"
            raise _refuse(403, f"write refused: {what}; enter the token given to `policylens serve --write-token` "
                               "(or POLICYLENS_WRITE_TOKEN) in the page header")
    return desk


Writer = Annotated[Desk, Depends(require_write)]


def _html(request: Request, name: str, context: dict[str, Any]) -> HTMLResponse:
    desk = _desk(request)
    model = desk.served()
    base = {"model_version": model.version if model else "-", "model_name": _registry_name(model), "read_only": desk.read_only,
            "token_required": desk.config.write_token is not None, "has_backend": desk.backend is not None}
    response = TEMPLATES.TemplateResponse(request, name, {**base, **context})
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _registry_name(model: Any) -> str | None:
    """`v0002` when the served model is a registry version (its version string is the training time)."""
    name = Path(model.model_dir).name if model is not None else ""
    return name if re.fullmatch(r"v\d{4,}", name) else None


# -- request bodies ----------------------------------------------------------


class CorrectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    doc: str = Field(pattern=KEY.pattern)
    index: int = Field(ge=0)
    labels: list[str] = Field(max_length=64, description="The paragraph's labels now; [] = none of the domains.")
    seen: str | None = Field(default=None, max_length=64, description="The review version the page showed.")


class UndoRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    doc: str = Field(pattern=KEY.pattern)
    index: int = Field(ge=0)
    version: str = Field(min_length=1, max_length=64)


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(min_length=1, max_length=64)


# -- routes ------------------------------------------------------------------


def _sorted_rows(desk: Desk, domain: str | None, sort: str, order: str) -> tuple[list[dict], list[str]]:
    entries = desk.inbox.entries()
    states = desk.states(entries)
    rows = [document_row(entry, states, desk.config.low_confidence) for entry in entries]
    domains: list[str] = []
    for entry in entries:
        domains += [d for d in domain_ids(entry) if d not in domains]
    if not domains and desk.served() is not None:
        domains = list(desk.served().predictor.labels)
    if domain:
        rows = [row for row in rows if row["counts"].get(domain, 0) > 0]
    if sort in domains:
        key = lambda row: (row["counts"].get(sort, 0), row["title"])
    elif sort in SORTS:
        key = lambda row: (row[sort], row["title"])
    else:
        key = lambda row: (row["uploaded"], row["title"])
    return sorted(rows, key=key, reverse=order == "desc"), domains


def page_routes(router: APIRouter) -> None:
    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def inbox_page(request: Request, domain: str | None = None, sort: str = "uploaded", order: str = "desc") -> Response:
        desk = _desk(request)
        rows, domains = _sorted_rows(desk, domain or None, sort, order)
        return _html(request, "inbox.html", {
            "page": "inbox", "rows": rows, "domains": domains, "domain": domain or "", "sort": sort, "order": order,
            "limits": {"max_mib": desk.config.max_upload_bytes / 2**20, "max_files": desk.config.max_files,
                       "suffixes": " ".join(UPLOAD_SUFFIXES)},
        })

    @router.get("/doc/{key}", response_class=HTMLResponse, include_in_schema=False)
    def document_page(request: Request, key: str, domain: str | None = None) -> Response:
        desk = _desk(request)
        entry = desk.entry(key)
        states = desk.states([entry])
        extra = [label for state in states.values() for label in state["labels"]]
        serving = desk.served().version
        split = desk.backend.split_of(entry.record["id"]) if desk.backend is not None else None
        return _html(request, "document.html", {
            "page": "document", "entry": entry, "record": entry.record, "paragraphs": paragraph_views(entry, states, desk.config.low_confidence),
            "domains": domain_ids(entry, extra), "domain": domain or "", "serving": serving,
            "stale": entry.record.get("model_version") != serving,
            "sentences": _summary_links(entry.record), "split": split,
        })

    @router.get("/review", response_class=HTMLResponse, include_in_schema=False)
    def review_page(request: Request) -> Response:
        desk = _desk(request)
        queue, problem = [], None
        if desk.backend is None:
            problem = desk.read_only
        else:
            try:
                queue = desk.review_queue()
            except DeskError as err:
                problem = err.message
        return _html(request, "review.html", {"page": "review", "queue": queue, "problem": problem})

    @router.get("/models", response_class=HTMLResponse, include_in_schema=False)
    def models_page(request: Request, version: str | None = None) -> Response:
        desk = _desk(request)
        models, report, problem = None, None, None
        if desk.backend is None:
            problem = desk.read_only
        else:
            try:
                models = desk.backend.models()
                with_report = [v["version"] for v in models["versions"] if v.get("has_report")]
                shown = version or (with_report[-1] if with_report else None)  # adopted versions have none
                report = desk.backend.report(shown) if shown else None
            except DeskError as err:
                problem = err.message
        retrain_off = desk.backend.status().get("retrain") if desk.backend is not None else None
        running = desk.trainer.busy() if desk.trainer is not None else None
        return _html(request, "models.html", {
            "page": "models", "models": models, "report": report, "problem": problem, "retrain_off": retrain_off,
            "running": running.snapshot() if running else None,
            "follows": _follows_registry(desk),
        })


def _follows_registry(desk: Desk) -> str | None:
    """Why promotions would not reach this server (it does not watch the registry's CURRENT), or None."""
    if desk.backend is None:
        return None
    pointer = desk.backend.status().get("pointer")
    served = getattr(desk.service, "registry_pointer", None)
    if pointer is None:
        return None
    if served is None or Path(served).resolve() != Path(pointer).resolve():
        return (f"this server does not follow {pointer}: a promotion changes the registry, but the served model "
                f"changes only after a restart with `policylens serve --registry {pointer}`")
    return None


def _summary_links(record: dict) -> list[dict]:
    """The stored summary's sentences, each with the index of the paragraph it came from."""
    index = {p["id"]: p["index"] for p in record["paragraphs"]}
    summary = record.get("summary") or {}
    return [{"text": s["text"], "index": index.get(s.get("paragraph_id"))} for s in summary.get("sentences") or ()]


def api_routes(router: APIRouter) -> None:
    @router.get("/desk/api/state", tags=["desk"], summary="What this desk allows")
    def state(request: Request) -> dict[str, Any]:
        desk = _desk(request)
        status = desk.backend.status() if desk.backend is not None else {}
        return {"model_version": desk.served().version, "read_only": desk.read_only,
                "token_required": desk.config.write_token is not None, "documents": len(desk.inbox), "backend": status}

    @router.post("/desk/api/upload", tags=["desk"], summary="Upload files or pasted text to tag")
    def upload(body: UploadRequest, desk: Writer) -> JSONResponse:
        files = decode_upload(desk.config, body)
        title = ", ".join(name for name, _ in files)[:120]
        job = desk.submit_upload(files, title)
        return JSONResponse(job.snapshot(), status_code=202)

    @router.get("/desk/api/jobs", tags=["desk"], summary="Background jobs, newest first")
    def jobs(request: Request) -> list[dict[str, Any]]:
        desk = _desk(request)
        found = [job for runner in (desk.tagger, desk.trainer) if runner is not None for job in runner.jobs()]
        return [job.snapshot() for job in sorted(found, key=lambda j: j.created, reverse=True)]

    @router.get("/desk/api/jobs/{job_id}", tags=["desk"], summary="One job's progress")
    def job(request: Request, job_id: str) -> dict[str, Any]:
        desk = _desk(request)
        for runner in (desk.tagger, desk.trainer):
            found = runner.get(job_id) if runner is not None else None
            if found is not None:
                return found.snapshot()
        raise _refuse(404, f"no job {job_id!r}")

    @router.get("/desk/api/docs", tags=["desk"], summary="The inbox: per-domain paragraph counts, date, source")
    def documents(request: Request, domain: str | None = None, sort: str = "uploaded", order: str = "desc") -> list[dict]:
        return _sorted_rows(_desk(request), domain, sort, order)[0]

    @router.get("/desk/api/docs/{key}", tags=["desk"], summary="A document's paragraphs with labels and their state")
    def document(request: Request, key: str) -> dict[str, Any]:
        desk = _desk(request)
        entry = desk.entry(key)
        states = desk.states([entry])
        return {"key": key, "id": entry.record["id"], "title": entry.title, "model_version": entry.record.get("model_version"),
                "domains": domain_ids(entry), "summary": entry.record.get("summary"),
                "paragraphs": paragraph_views(entry, states, desk.config.low_confidence)}

    @router.get("/desk/api/docs/{key}/labels", tags=["desk"], summary="Current labels (the page polls them)")
    def labels(request: Request, key: str) -> dict[str, Any]:
        desk = _desk(request)
        entry = desk.entry(key)
        views = paragraph_views(entry, desk.states([entry]), desk.config.low_confidence)
        return {str(v["index"]): {k: v[k] for k in ("labels", "version", "origin", "reviews", "review_count", "reviewed", "differs")}
                for v in views if v["kind"] == "body"}

    @router.get("/desk/api/docs/{key}/summary", tags=["desk"], summary="Summary, of the document or one domain")
    def summary(request: Request, key: str, domain: str | None = None) -> dict[str, Any]:
        desk = _desk(request)
        result = desk.summary(key, domain or None)
        index = {p["id"]: p["index"] for p in desk.entry(key).record["paragraphs"]}
        sentences = (result["summary"] or {}).get("sentences") or []
        return {**result, "sentences": [{"text": s["text"], "index": index.get(s.get("paragraph_id"))} for s in sentences]}

    @router.post("/desk/api/docs/{key}/retag", tags=["desk"], summary="Tag a document again with the served model")
    def retag(key: str, desk: Writer) -> JSONResponse:
        return JSONResponse(desk.submit_retag(key).snapshot(), status_code=202)

    @router.post("/desk/api/correct", tags=["desk"], summary="Set a paragraph's labels (written to the label store at once)")
    def correct(body: CorrectRequest, desk: Writer) -> dict[str, Any]:
        return desk.correct(body.doc, body.index, body.labels, body.seen)

    @router.post("/desk/api/undo", tags=["desk"], summary="Take back a correction")
    def undo(body: UndoRequest, desk: Writer) -> dict[str, Any]:
        return desk.undo(body.doc, body.index, body.version)

    @router.get("/desk/api/review", tags=["desk"], summary="The to-review queue (uncertain and diverse paragraphs)")
    def review(request: Request, n: Annotated[int, Query(ge=1, le=500)] = 30) -> list[dict[str, Any]]:
        return _desk(request).review_queue(n)

    @router.post("/desk/api/retrain", tags=["desk"], summary="Start a retraining in the background")
    def retrain(desk: Writer) -> JSONResponse:
        return JSONResponse(desk.submit_retrain().snapshot(), status_code=202)

    @router.get("/desk/api/models", tags=["desk"], summary="Registered versions and the current one")
    def models(request: Request) -> dict[str, Any]:
        desk = _desk(request)
        if desk.backend is None:
            raise _refuse(404, desk.read_only or "no registry")
        return desk.backend.models()

    @router.get("/desk/api/models/{version}/report", tags=["desk"], summary="A version's gate report")
    def report(request: Request, version: str) -> dict[str, Any]:
        desk = _desk(request)
        if desk.backend is None:
            raise _refuse(404, desk.read_only or "no registry")
        return desk.backend.report(version)

    async def _switch(desk: Desk, action: Any) -> dict[str, Any]:
        name = await run_in_threadpool(action)
        reload = await desk.service.reload() if desk.service.registry_pointer is not None else None
        return {"current": name, "reload": reload.model_dump() if reload is not None else None,
                "model_version": desk.served().version, "warning": _follows_registry(desk)}

    @router.post("/desk/api/models/promote", tags=["desk"], summary="Serve a version (hot swap)")
    async def promote(body: PromoteRequest, desk: Writer) -> dict[str, Any]:
        backend = desk._backend()
        return await _switch(desk, lambda: backend.promote(body.version))

    @router.post("/desk/api/models/adopt", tags=["desk"], summary="Register the served model as the first version")
    async def adopt(desk: Writer) -> dict[str, Any]:
        backend = desk._backend()
        model_dir = Path(desk.served().model_dir)
        return await _switch(desk, lambda: backend.adopt(model_dir))

    @router.post("/desk/api/models/rollback", tags=["desk"], summary="Serve the previously promoted version")
    async def rollback(desk: Writer) -> dict[str, Any]:
        backend = desk._backend()
        return await _switch(desk, backend.rollback)

    @router.get("/desk/export", tags=["desk"], summary="Export the current view as CSV, JSON Lines or Markdown")
    def export(request: Request, doc: Annotated[list[str] | None, Query()] = None, format: str = "csv",
               domain: str | None = None, whole: bool = False) -> Response:
        desk = _desk(request)
        keys = doc or [row["key"] for row in _sorted_rows(desk, domain or None, "uploaded", "desc")[0]]
        body, media, suffix = desk.export(keys, format, domain or None, whole or not doc)
        name = (keys[0] if len(keys) == 1 else "inbox") + (f"-{domain}" if domain else "") + f".{suffix}"
        return Response(body, media_type=f"{media}; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


def install_desk(app: FastAPI, desk: Desk) -> None:
    """Mount the desk on `app`: pages, API, static files, the upload size guard; `app.state.desk`."""
    app.state.desk = desk

    @app.exception_handler(DeskError)
    async def _desk_error(request: Request, exc: DeskError) -> JSONResponse:
        return error_response(exc.status, [{"loc": [], "type": "desk", "msg": exc.message}], message=exc.message)

    router = APIRouter()
    page_routes(router)
    api_routes(router)
    app.include_router(router)
    app.mount("/desk/static", StaticFiles(directory=HERE / "static"), name="desk-static")
    app.add_middleware(UploadSizeGuard, path="/desk/api/upload", limit=desk.config.max_body_bytes)


__all__ = ["EXPORT_FORMATS", "install_desk", "require_write"]
