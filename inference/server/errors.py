"""Error bodies of the HTTP API: one shape for every 4xx/5xx, and the request size checks.

Validation errors (422), size limits (413), overload (503) and model failures (500)
all answer `{"message": ..., "detail": [...]}` (ErrorBody), so a client needs one parser.
So do the raw-body checks of BodyGuard, which run before FastAPI parses anything:
a wrong Content-Type (415), a body that is not UTF-8 (400) or JSON nested deeper
than `max_json_depth` (400).
"""

from __future__ import annotations

import re
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


def error_response(status: int, errors: list[dict[str, Any]], headers: dict[str, str] | None = None,
                   *, message: str | None = None) -> JSONResponse:
    """An ErrorBody: a one-line `message` naming the first problem (or `message`), then every problem in `detail`."""
    clean = []
    for error in errors:
        row = {"loc": list(error.get("loc", [])), "msg": str(error.get("msg", "")), "type": error.get("type", "error")}
        value = error.get("input")
        if value is not None and not isinstance(value, (dict, list)) and len(repr(value)) <= 80:
            row["input"] = value  # short inputs help; never echo a 20,000-character text back
        clean.append(row)
    if message is None:
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
    400: {"model": ErrorBody, "description": "Body is not valid UTF-8, or its JSON is nested deeper than max_json_depth."},
    413: {"model": ErrorBody, "description": "Too many items, or a text longer than the limit."},
    415: {"model": ErrorBody, "description": "Content-Type is not application/json (UTF-8)."},
    422: {"model": ErrorBody, "description": "Malformed body: missing or empty list, blank text, wrong type."},
    503: {"model": ErrorBody, "description": "Queue full or shutting down; retry."},
}


# ---------------------------------------------------------------------------
# raw-body checks: one small ASGI middleware that reads the body once, checks it, and replays it
# ---------------------------------------------------------------------------

JSON_MEDIA_TYPE = "application/json"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# A JSON string token (possessive, so linear even on hostile input; an unterminated one runs to the
# end), or a bracket. Strings are skipped so that "[" inside a text never counts as nesting.
_TOKENS = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)


def json_depth_exceeds(text: str, limit: int) -> bool:
    """True when the JSON `text` nests arrays/objects more than `limit` deep (without parsing it)."""
    if text.count("[") + text.count("{") <= limit:  # every real request: no need to scan
        return False
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif token in ("]", "}"):
            depth -= 1
    return False


def _media_type(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, dict[str, str]]:
    """(type/subtype in lower case or None when absent, parameters) of the Content-Type header."""
    for name, value in headers:
        if name.lower() == b"content-type":
            kind, *params = value.decode("latin-1").split(";")
            parsed = {}
            for param in params:
                key, _, val = param.partition("=")
                parsed[key.strip().lower()] = val.strip().strip('"').lower()
            return kind.strip().lower(), parsed
    return None, {}


class BodyGuard:
    """ASGI middleware: check the raw body of POST/PUT/PATCH requests before FastAPI parses it.

    - a non-empty body must be sent as application/json (or an application/*+json type), in
      UTF-8: else 415 naming the expected type (FastAPI would not read it as JSON anyway);
    - it must decode as UTF-8: else 400 "body is not valid UTF-8";
    - its arrays/objects may nest at most `max_depth` deep: else 400 naming the limit
      (Python's parser would otherwise recurse on it).
    The body is read once and handed on unchanged; later receive() calls (a client's
    disconnect) reach the app as they come.
    """

    def __init__(self, app: Any, max_depth: int) -> None:
        self.app = app
        self.max_depth = max_depth

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # nobody left to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = self.check(body, scope.get("headers", [])) if body else None
        if problem is not None:
            await problem(scope, receive, send)
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def check(self, body: bytes, headers: list[tuple[bytes, bytes]]) -> JSONResponse | None:
        """The error response for `body`, or None when it may go on to the routes."""
        kind, params = _media_type(headers)
        if kind is None or (kind != JSON_MEDIA_TYPE and not (kind.startswith("application/") and kind.endswith("+json"))):
            what = "is missing" if kind is None else f"{kind or '(empty)'!r} is not supported"
            msg = f"Content-Type {what}; send the body as {JSON_MEDIA_TYPE}"
            return error_response(415, [{"loc": ["header", "content-type"], "type": "unsupported_media_type", "msg": msg}],
                                  message=msg)
        charset = params.get("charset")
        if charset is not None and charset.replace("_", "-") not in ("utf-8", "utf8"):
            msg = f"charset {charset!r} is not supported; send {JSON_MEDIA_TYPE} in UTF-8"
            return error_response(415, [{"loc": ["header", "content-type"], "type": "unsupported_media_type", "msg": msg}],
                                  message=msg)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as err:
            msg = f"body is not valid UTF-8 (byte 0x{body[err.start]:02x} at offset {err.start})"
            return error_response(400, [{"loc": ["body"], "type": "invalid_utf8", "msg": msg}], message=msg)
        if json_depth_exceeds(text, self.max_depth):
            msg = f"body: JSON nested more than {self.max_depth} levels deep; the limit is max_json_depth={self.max_depth}"
            return error_response(400, [{"loc": ["body"], "type": "json_too_deep", "msg": msg}], message=msg)
        return None
