"""Scale-out engine: the same Predictor on Ray Data, one stateful actor per worker.

Why Ray Data: `map_batches` with a callable class loads the model once per
actor and streams documents through a pool of them, on one machine
(`ray.init()` starts a local cluster) or on a cluster (`RAY_ADDRESS=...`), with
back-pressure, so memory stays flat on large corpora. Results come back in
input order and are written by the driver exactly as with the local engine
(same records, same part-file, same resume).

Needs the optional `scale` extra: pip install "policylens[scale]" (ray[data]).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from inference.batch.chunk import analyze_chunk
from policylens.document import Document


class PredictorActor:
    """Stateful Ray Data UDF: loads the Predictor once, analyses one batch of documents per call."""

    def __init__(self, model_dir: str, backend: str | None, summary: bool, num_threads: int | None,
                 batch_size: int) -> None:
        from inference.predictor import Predictor

        self.summary = summary
        self.predictor = Predictor(model_dir, backend=backend, num_threads=num_threads, batch_size=batch_size,
                                   summarizer="auto" if summary else None)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        chunk = [
            (str(key), Document(id=str(doc_id), text=str(text), source=str(source) or None, title=str(title) or None,
                                meta=json.loads(str(meta))))
            for key, doc_id, text, source, title, meta in zip(
                batch["key"], batch["id"], batch["text"], batch["source"], batch["title"], batch["meta"])
        ]
        results = analyze_chunk(self.predictor, chunk, self.summary)  # per-document errors, never a failed batch
        return {
            "key": np.asarray([key for key, _ in results], dtype=object),
            "record": np.asarray([json.dumps(r, ensure_ascii=False, default=str) if isinstance(r, dict) else ""
                                  for _, r in results], dtype=object),
            "error": np.asarray([r if isinstance(r, str) else "" for _, r in results], dtype=object),
        }


def _init_ray(workers: int, threads: int) -> None:
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()  # join the cluster named by RAY_ADDRESS
        return
    ray.init(
        num_cpus=max(1, workers * threads),  # a CPU slot per predictor thread: Ray never oversubscribes
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=256 * 2**20,  # documents and records are small; leave memory to the models
        configure_logging=False,
    )


def ray_engine(items: Iterable[tuple[str, Document]], model_dir: Path, config: Any,
               docs_per_batch: int = 16) -> Iterator[tuple[str, dict | str]]:
    """(key, document) in, (key, record or error message) out, in input order (see inference.batch.engine)."""
    try:
        import ray
    except ImportError as err:
        raise ImportError('--engine ray needs Ray Data: pip install "ray[data]" (the `scale` extra)') from err
    from policylens.tagger.scoring import default_threads

    rows = [
        {"key": key, "id": d.id, "text": d.text, "source": d.source or "", "title": d.title or "",
         "meta": json.dumps(d.meta, ensure_ascii=False, default=str)}
        for key, d in items
    ]
    if not rows:
        return
    threads = config.num_threads or max(1, default_threads() // config.workers)
    _init_ray(config.workers, threads)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False  # the batch run draws its own bar
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    dataset = ray.data.from_items(rows).map_batches(
        PredictorActor,
        fn_constructor_kwargs={
            "model_dir": str(Path(model_dir).resolve()),
            "backend": config.backend,
            "summary": config.summary,
            "num_threads": threads,
            "batch_size": config.batch_size,
        },
        concurrency=config.workers,
        batch_size=docs_per_batch,
        batch_format="numpy",
        num_cpus=threads,
    )
    for row in dataset.iter_rows():
        record = str(row["record"])
        yield str(row["key"]), (json.loads(record) if record else str(row["error"]))
