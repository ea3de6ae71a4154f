"""Uploads to the desk: the request body, its decoding, and the limits (400 / 413 naming file and limit).

Files travel base64-encoded inside a JSON body: the API's BodyGuard accepts only JSON, and a
JSON-only write cannot be sent by another site's form. UploadSizeGuard refuses a body whose
declared size is over the limit before anything reads it.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from inference.server.desk.backend import DeskError
from inference.server.desk.config import UPLOAD_SUFFIXES, DeskConfig
from inference.server.desk.pipeline import paste_name


class UploadedFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=255)
    data: str = Field(description="The file's bytes, base64-encoded.")


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    files: list[UploadedFile] = Field(default_factory=list)
    text: str | None = Field(default=None, description="Pasted text: one document.")
    title: str | None = Field(default=None, max_length=200)



def decode_upload(config: DeskConfig, body: UploadRequest) -> list[tuple[str, bytes]]:
    """The uploaded files (and pasted text, as a .txt file), checked against the limits: 400 / 413 naming them."""
    if not body.files and not (body.text and body.text.strip()):
        raise DeskError(400, "nothing to upload: choose files or paste some text")
    if len(body.files) > config.max_files:
        raise DeskError(413, f"{len(body.files)} files in one upload; the limit is {config.max_files}")
    files: list[tuple[str, bytes]] = []
    total = 0
    for item in body.files:
        suffix = Path(item.name).suffix.lower()
        if suffix not in UPLOAD_SUFFIXES:
            raise DeskError(400, f"{item.name}: unsupported file type {suffix or '(none)'}; "
                               f"the desk reads {' '.join(UPLOAD_SUFFIXES)}")
        try:
            data = base64.b64decode(item.data, validate=True)
        except (binascii.Error, ValueError):
            raise DeskError(400, f"{item.name}: the file's data is not valid base64") from None
        if not data:
            raise DeskError(400, f"{item.name}: the file is empty")
        total += len(data)
        if total > config.max_upload_bytes:
            raise DeskError(413, f"{item.name}: the upload is over the limit of {config.max_upload_bytes / 2**20:.0f} MiB "
                               "per upload; upload fewer or smaller files")
        files.append((item.name, data))
    if body.text and body.text.strip():
        if len(body.text) > config.max_paste_chars:
            raise DeskError(413, f"the pasted text has {len(body.text)} characters; the limit is {config.max_paste_chars}")
        files.append((paste_name(body.text, body.title), body.text.encode("utf-8")))
    return files


class UploadSizeGuard:
    """ASGI middleware: refuse an upload whose declared body is over the limit before anything reads it (413)."""

    def __init__(self, app: Any, path: str, limit: int) -> None:
        self.app, self.path, self.limit = app, path, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST" and scope.get("path") == self.path:
            length = next((v for k, v in scope.get("headers", []) if k.lower() == b"content-length"), None)
            problem = None
            if length is None:
                problem = (411, "send the upload with a Content-Length header")
            elif not length.isdigit() or int(length) > self.limit:
                problem = (413, (f"the upload is over the limit of {self.limit / 2**20:.0f} MiB per request "
                                 "(files are sent base64-encoded); upload fewer or smaller files"))
            if problem is not None:
                response = JSONResponse({"message": problem[1], "detail": [{"loc": ["body"], "type": "upload", "msg": problem[1]}]},
                                        status_code=problem[0])
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
