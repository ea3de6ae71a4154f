"""Error bodies of the HTTP API: one shape for every 4xx/5xx, and the request size checks.

Validation errors (422), size limits (413), overload (503) and model failures (500)
all answer `{"message": ..., "detail": [...]}` (ErrorBody), so a client needs one parser.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from inference.server.schemas import ErrorBody


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


def error_response(status: int, errors: list[dict[str, Any]], headers: dict[str, str] | None = None) -> JSONResponse:
    """An ErrorBody: a one-line `message` naming the first problem, then every problem in `detail`."""
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


def install_error_handlers(app: FastAPI) -> None:
    """Validation errors and ApiError both answer an ErrorBody (FastAPI's own 422 shape differs)."""
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, list(exc.errors()))

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.errors, exc.headers)


def check_limits(
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


# The error answers of the POST endpoints, for the OpenAPI schema.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorBody, "description": "Too many items, or a text longer than the limit."},
    422: {"model": ErrorBody, "description": "Malformed body: missing or empty list, blank text, wrong type."},
    503: {"model": ErrorBody, "description": "Queue full or shutting down; retry."},
}
