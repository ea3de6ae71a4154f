"""What the review desk needs from the training side, as an interface (the desk never imports training/).

The concrete backend (label store, suggest, retrain, registry) is built in
policylens/cli/desk.py, the one layer allowed to wire training and inference,
and handed to `create_app(..., desk_backend=...)`. Without one the desk is read-only.

Paragraphs cross this boundary as plain dicts: `id`, `doc_id`, `text`, `source`
(and, for `to_review`, the model's `scores` and `thresholds`). A label state is a
dict: `labels` (what the store says now), `origin` ("review" for a desk click,
else the row's source, e.g. "seed"), `store_id`, `version` (the latest review
event for the paragraph, or None) and `reviews` (the latest few, newest last).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

# progress(phase, done, total): what a long call is doing now; done/total may be None.
Progress = Callable[[str, "int | None", "int | None"], None]


class DeskError(Exception):
    """A refusal with the HTTP status to answer (400 bad input, 404 unknown, 409 conflict) and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class DeskBackend(Protocol):
    """Writes and training-side reads of the review desk; every method may raise DeskError."""

    def status(self) -> dict[str, Any]:
        """Where the labels and models live, the dataset version, and `retrain` (None, or why it is off)."""

    def label_states(self, paragraphs: Sequence[dict]) -> dict[str, dict]:
        """Paragraph id -> label state, for the paragraphs the store holds (others are left out)."""

    def correct(self, paragraph: dict, labels: list[str], *, info: dict[str, Any], seen: str | None) -> dict:
        """Record a reviewer's labels at once. `seen`: the review version the reviewer's page showed
        (None: none). Returns {"state", "event": {version, time}, "overrode": None or the review
        this one replaced without the reviewer having seen it}."""

    def undo(self, paragraph: dict, version: str) -> dict:
        """Take back the review `version` (it must still be the paragraph's latest). Returns {"state", "event"}."""

    def to_review(self, candidates: Sequence[dict], n: int) -> list[dict]:
        """Up to `n` of `candidates` worth reviewing, best first: [{id, uncertainty}] (uncertain and diverse)."""

    def split_of(self, doc_id: str) -> str | None:
        """The fixed split (train, dev, test) a registered version put this document in; None if none has."""

    def retrain(self, progress: Progress) -> dict[str, Any]:
        """Train, gate and register a new version (never promoted here). Returns {version, report}."""

    def models(self) -> dict[str, Any]:
        """{current, versions: [{version, created, macro_f1, gate_passed, labels}], can_rollback}."""

    def report(self, version: str) -> dict[str, Any]:
        """The gate report of a registered version (retrain's report.json)."""

    def adopt(self, model_dir: Path) -> str:
        """Register the served model as the empty registry's first version, with the split it was trained
        on (so retraining warm-starts from it and the gate compares against it); returns its name."""

    def promote(self, version: str) -> str:
        """Point the registry's CURRENT at `version`; returns its name."""

    def rollback(self) -> str:
        """Point CURRENT back at the version promoted before; returns its name."""
