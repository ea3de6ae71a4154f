"""The review desk's training side: label store, suggest, retrain and registry behind DeskBackend.

inference/server/desk/ defines the interface and never imports training/; this is the one
place that implements it, and `policylens serve` hands it to `create_app(desk_backend=...)`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from inference.server.desk import DeskError, Progress
from policylens.hashing import text_hash
from policylens.io import InputError
from training.registry import CURRENT_FILE, Registry
from training.retrain import RetrainConfig, retrain
from training.store import LabelStore
from training.suggest import SuggestConfig, diverse_pick, uncertainty

REVIEW_SOURCE = "review-desk"  # the `source` of every label-store event the desk writes
_HISTORY = 5  # reviews kept per paragraph state
_STEP = re.compile(r"(\d+)/(\d+)")


class TrainingBackend:
    """DeskBackend over a LabelStore and (optionally) a Registry; see inference/server/desk/backend.py.

    The label index (store rows by id and by text hash, the desk's reviews per row) is cached
    and rebuilt when the store's log changes, so reading a page never replays the log.
    """

    def __init__(self, store: LabelStore, registry: Registry | None, retrain_config: RetrainConfig | None = None) -> None:
        self.store = store
        self.registry = registry
        self.retrain_config = retrain_config or RetrainConfig()
        self._lock = threading.Lock()
        self._index: tuple[tuple, dict] | None = None
        self._hashes: dict[str, str] = {}

    # -- reading --------------------------------------------------------------

    def split_of(self, doc_id: str) -> str | None:
        return self.registry.split_assignments().get(doc_id) if self.registry else None

    def status(self) -> dict[str, Any]:
        return {
            "store": str(self.store.root), "store_version": self.store.version,
            "registry": str(self.registry.root) if self.registry else None,
            "pointer": str(self.registry.root / CURRENT_FILE) if self.registry else None,
            "retrain": None if self.registry else "no model registry: start the server with "
                       "`--registry DIR/CURRENT` to retrain, promote and roll back from the desk",
        }

    def _stamp(self) -> tuple:
        try:
            st = self.store.log_path.stat()
            return (st.st_mtime_ns, st.st_size)
        except OSError:
            return (None, None)

    def _label_index(self) -> dict:
        """{"by_id", "by_hash", "reviews"} for the store as it is now (cached per log state)."""
        with self._lock:
            stamp = self._stamp()
            if self._index is not None and self._index[0] == stamp:
                return self._index[1]
            rows = self.store.rows()
            reviews: dict[str, list[dict]] = {}
            for event in self.store.events():
                if event.get("source") != REVIEW_SOURCE:
                    continue
                for row in event["rows"]:
                    info = row.get("review") or {}
                    reviews.setdefault(row["id"], []).append({
                        "type": event["type"], "time": event["time"], "version": event["version"],
                        "labels": row.get("labels"), "model_version": info.get("model_version"),
                        "undo_of": info.get("undo_of"),
                    })
            index = {"by_id": {row["id"]: row for row in rows},
                     "by_hash": {text_hash(row["text"]): row for row in rows}, "reviews": reviews}
            self._index = (stamp, index)
            return index

    def _hash(self, text: str) -> str:
        digest = self._hashes.get(text)
        if digest is None:
            digest = self._hashes[text] = text_hash(text)
        return digest

    def _state(self, index: dict, paragraph: dict) -> dict | None:
        digest = self._hash(paragraph["text"])
        row = index["by_id"].get(paragraph["id"])
        if row is None or self._hash(row["text"]) != digest:
            row = index["by_hash"].get(digest)
        if row is None:
            return None
        reviews = [r for r in index["reviews"].get(row["id"], []) if r["type"] != "withdraw"]
        if reviews:
            origin = "review"
        elif row.get("origin") == "store":
            origin = "store"
        else:
            origin = "seed" if row.get("source") == "seed" else "base"
        return {"labels": list(row["labels"]), "origin": origin, "store_id": row["id"],
                "version": reviews[-1]["version"] if reviews else None, "reviews": reviews[-_HISTORY:], "count": len(reviews)}

    def label_states(self, paragraphs: Sequence[dict]) -> dict[str, dict]:
        index = self._label_index()
        states = {}
        for paragraph in paragraphs:
            state = self._state(index, paragraph)
            if state is not None:
                states[paragraph["id"]] = state
        return states

    # -- corrections ----------------------------------------------------------

    def _record(self, paragraph: dict, labels: list[str] | None, info: dict) -> dict:
        try:
            event = self.store.review(paragraph, labels, source=REVIEW_SOURCE, info=info)
        except InputError as err:
            raise DeskError(400, str(err)) from None
        return {"version": event["version"], "time": event["time"], "type": event["type"]}

    def correct(self, paragraph: dict, labels: list[str], *, info: dict[str, Any], seen: str | None) -> dict:
        before = self._state(self._label_index(), paragraph)
        overrode = None
        if before is not None and before["version"] is not None and before["version"] != seen:
            last = before["reviews"][-1]
            overrode = {"version": last["version"], "time": last["time"], "labels": last["labels"]}
        event = self._record(paragraph, list(labels), info)
        return {"state": self._state(self._label_index(), paragraph), "event": event, "overrode": overrode}

    def undo(self, paragraph: dict, version: str) -> dict:
        """Take back the review `version` if the paragraph still has the labels it set (else 409): a correction
        gets its old labels back, the click that added the paragraph to the store withdraws it."""
        state = self._state(self._label_index(), paragraph)
        event = next((e for e in self.store.events() if e["version"] == version and e.get("source") == REVIEW_SOURCE), None)
        if event is None or event["type"] == "withdraw":
            raise DeskError(404, f"no correction {version!r} to undo")
        row = event["rows"][0]
        if state is None or state["store_id"] != row["id"] or state["labels"] != row["labels"]:
            now = f" (it now has {', '.join(state['labels']) or 'no labels'})" if state else ""
            raise DeskError(409, f"paragraph {paragraph['id']} was changed after this correction{now}; "
                                 "reload the page and set its labels directly")
        info = {"undo_of": version}
        if event["type"] == "add":
            result = self._record(paragraph, None, info)
        else:
            result = self._record(paragraph, list(row["old_labels"]), info)
        return {"state": self._state(self._label_index(), paragraph), "event": result}

    def to_review(self, candidates: Sequence[dict], n: int) -> list[dict]:
        """suggest's ranking: uncertainty under each paragraph's own model thresholds, then max-min diversity."""
        if not candidates:
            return []
        config = SuggestConfig(n=n)
        scores = np.array([
            uncertainty(np.array([[c["scores"][label] for label in c["thresholds"]]]), list(c["thresholds"].values()))[0]
            for c in candidates
        ])
        pool = np.argsort(-scores, kind="stable")[: config.n * config.pool_factor]
        picked = diverse_pick([candidates[i]["text"] for i in pool], scores[pool], config.n, config.weight)
        return [{"id": candidates[pool[i]]["id"], "uncertainty": round(float(scores[pool[i]]), 4)} for i in picked]

    # -- models ---------------------------------------------------------------

    def _registry(self) -> Registry:
        if self.registry is None:
            raise DeskError(409, self.status()["retrain"])
        return self.registry

    def retrain(self, progress: Progress) -> dict[str, Any]:
        """`policylens retrain --no-promote` in this process; progress from its phases and its training bar."""
        import torch

        registry = self._registry()
        config = dataclasses.replace(self.retrain_config, promote=False)
        threads = torch.get_num_threads()

        def train(*args: Any, **kwargs: Any) -> Any:
            from training.tagger import train_tagger

            progress("training", None, None)
            try:
                return train_tagger(*args, **kwargs)
            finally:
                progress("scoring the old and the new model on the fixed test split", None, None)

        progress("reading the label store and the registry", None, None)
        try:
            with _report_output(progress):
                result = retrain(self.store, registry, config, train_fn=train, progress=True)
        except (InputError, ValueError) as err:
            raise DeskError(400, f"retraining failed: {err}") from None
        finally:
            torch.set_num_threads(threads)  # training sets the process-wide count; serving keeps its own
        progress(f"registered {result.version}", None, None)
        return {"version": result.version, "report": result.report}

    def models(self) -> dict[str, Any]:
        registry = self._registry()
        versions = []
        for name in registry.versions():
            try:
                info = registry.info(name)
            except InputError as err:
                versions.append({"version": name, "error": str(err)})
                continue
            test = info.get("metrics", {}).get("new", {}).get("test", {})
            versions.append({"version": name, "created": info.get("created", ""), "macro_f1": test.get("macro_f1"),
                             "gate_passed": info.get("gate", {}).get("promote"), "labels": info.get("labels", []),
                             "parent": info.get("parent"), "start": info.get("start"), "data_version": info.get("data_version"),
                             "has_report": (registry.path(name) / "report.json").exists()})
        stack: list[str] = []
        for event in registry.history():
            if event["action"] == "promote":
                stack.append(Path(str(event["to"]).strip()).name)
            elif event["action"] == "rollback" and stack:
                stack.pop()
        return {"current": registry.current(), "versions": versions,
                "rollback_to": stack[-2] if len(stack) >= 2 else None}

    def report(self, version: str) -> dict[str, Any]:
        registry = self._registry()
        try:
            name = registry.resolve(version)
        except InputError as err:
            raise DeskError(404, str(err)) from None
        path = registry.path(name) / "report.json"
        if not path.exists():
            raise DeskError(404, f"{name} has no gate report (it was not made by retrain)")
        return {**json.loads(path.read_text(encoding="utf-8")), "version": name}

    def adopt(self, model_dir: Path) -> str:
        """The served tagger (from `policylens train`) as v0001 of an empty registry, promoted.

        Its test split must be known for the gate to be fair: the tagger records the fingerprint
        of the data and split it was trained on, and the store's base data, split the way
        `policylens train` splits it, must give the same fingerprint; else 409 and nothing is written.
        """
        from policylens.dataset import split_by_document
        from policylens.tagger.model_dir import TaggerMeta
        from training.store import EMPTY_VERSION
        from training.tagger import data_fingerprint

        registry = self._registry()
        if registry.versions():
            raise DeskError(409, f"{registry.root} already has versions ({', '.join(registry.versions())}); "
                                 "promote one of them instead")
        meta = TaggerMeta.load(model_dir)
        splits = split_by_document(self.store.rows(EMPTY_VERSION), self.retrain_config.split)
        fingerprint = data_fingerprint(splits)
        if meta.data.get("fingerprint") != fingerprint:
            raise DeskError(409, f"{model_dir} was not trained on this label store's base data with the default split "
                                 "(its data fingerprint differs), so its test split is unknown and a gate against it "
                                 "would not be fair; retrain from the backbone instead")
        staged = registry.root / f".staging-{os.getpid()}-adopt"
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(model_dir, staged)
        try:
            name = registry.register(staged, {
                "parent": None, "start": "adopted", "adopted_from": str(model_dir), "data_version": EMPTY_VERSION,
                "data_fingerprint": fingerprint, "labels": meta.taxonomy.ids,
                "sizes": {split: len(rows) for split, rows in splits.items()},
                "metrics": {"new": {"test": meta.metrics["test"]}} if "test" in meta.metrics else {},
                "gate": {"promote": True, "reasons": ["adopted: trained by `policylens train`"], "checks": []},
            })
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        registry.record_splits({row["doc_id"]: split for split, rows in splits.items() for row in rows}, name)
        registry.promote(name, note=f"adopted {model_dir}")
        return name

    def promote(self, version: str) -> str:
        try:
            return self._registry().promote(version, note="review desk")
        except InputError as err:
            raise DeskError(400, str(err)) from None

    def rollback(self) -> str:
        try:
            return self._registry().rollback()
        except InputError as err:
            raise DeskError(409, str(err)) from None


class _Tap(io.TextIOBase):
    """Stands in for sys.stdout / sys.stderr while one thread retrains: everything is passed on
    unchanged, and that thread's lines (tqdm's `train: ... 12/40` bar, printed phases) become progress."""

    def __init__(self, stream: Any, thread: int, progress: Progress) -> None:
        self.stream, self.thread, self.progress = stream, thread, progress

    def write(self, text: str) -> int:
        if threading.get_ident() == self.thread:
            line = next((part.strip() for part in reversed(re.split(r"[\r\n]", text)) if part.strip()), "")
            step = _STEP.search(line)
            if line.startswith("train") and step:
                self.progress("training", int(step.group(1)), int(step.group(2)))
            elif line and not step:
                self.progress(line[:160], None, None)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextmanager
def _report_output(progress: Progress) -> Iterator[None]:
    thread = threading.get_ident()
    out, err = _Tap(sys.stdout, thread, progress), _Tap(sys.stderr, thread, progress)
    sys.stdout, sys.stderr = out, err
    try:
        yield
    finally:
        if sys.stdout is out:
            sys.stdout = out.stream
        if sys.stderr is err:
            sys.stderr = err.stream


def build_backend(store_dir: Path, taxonomy: Path, silver: bool, pointer: Path | None, *, epochs: int,
                  threads: int | None, gate_rule: str = "point") -> TrainingBackend:
    """What `policylens serve` hands the desk: the store at `store_dir` and the registry the pointer sits in."""
    from policylens.dataset import default_sources
    from training.registry import GateConfig
    from training.tagger import TaggerConfig

    store = LabelStore(store_dir, taxonomy_path=taxonomy, base_sources=default_sources(include_silver=silver))
    registry = Registry(Path(pointer).parent) if pointer is not None else None
    config = RetrainConfig(tagger=TaggerConfig(epochs=epochs, num_threads=threads), gate=GateConfig(drop_rule=gate_rule))
    return TrainingBackend(store, registry, config)
