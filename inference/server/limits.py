"""The server's limits and batching settings, defined once.

`create_app`, `create_app_from_env`, `policylens serve` and the load test all take
their defaults from `ServerLimits`, so a limit changed here changes everywhere.
This module imports nothing heavy: the CLI reads the defaults without loading FastAPI.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

ENV_PREFIX = "POLICYLENS_SERVE_"


@dataclass(frozen=True)
class ServerLimits:
    """How much one request may ask for, and how requests are merged into model calls.

    max_batch: most paragraphs per /v1/tag request; also the size of one model call, in
        paragraph-sized units of 400 characters (a longer request runs alone).
    max_chars: longest paragraph (/v1/tag) or document text (/v1/analyze) accepted.
    max_documents: most documents per /v1/analyze request.
    max_total_chars: most characters in one request (bounds the work one request can ask for).
    max_wait_ms: how long a batch waits for more requests before it runs.
    max_queue: most units waiting for the model before requests are turned away (503).
    poll_seconds: how often the pointer / model files are checked for a new model (0: never).
    request_timeout_s: most seconds a request may wait for the model (queue + run); then 503 with
        Retry-After, and its queued work is dropped (0: no limit).
    retry_after_s: the Retry-After (seconds) sent with that 503.
    max_json_depth: deepest nesting of arrays/objects a JSON body may have (a valid request needs 3).
    """

    max_batch: int = 256
    max_chars: int = 20000
    max_documents: int = 64
    max_total_chars: int = 500_000
    max_wait_ms: float = 2.0
    max_queue: int = 8192
    poll_seconds: float = 5.0
    request_timeout_s: float = 30.0
    retry_after_s: int = 2
    max_json_depth: int = 64

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_chars", "max_documents", "max_total_chars", "max_queue", "max_json_depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_wait_ms", "poll_seconds", "request_timeout_s", "retry_after_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def public(self) -> dict[str, int]:
        """The request limits a client needs to know (GET /v1/model `limits`)."""
        return {
            "max_batch": self.max_batch, "max_chars": self.max_chars, "max_documents": self.max_documents,
            "max_total_chars": self.max_total_chars,
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerLimits:
        """Limits from POLICYLENS_SERVE_<FIELD> (e.g. POLICYLENS_SERVE_MAX_BATCH); unset or empty: the default."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = env.get(ENV_PREFIX + field.name.upper())
            if raw:
                values[field.name] = type(getattr(DEFAULT_LIMITS, field.name))(raw)
        return cls(**values)


DEFAULT_LIMITS = ServerLimits()
