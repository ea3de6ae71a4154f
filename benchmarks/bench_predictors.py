"""Benchmark: naive transformers pipeline vs the PyTorch Predictor vs the ONNX int8 Predictor.

Same real paragraphs for all (the first documents of CORPUS_PATH, segmented,
until N body paragraphs), each predictor in a fresh subprocess so peak RSS is
its own, the same thread count for all. Prints a table; also reports test-split
macro-F1 per predictor (calibrated, stored thresholds), max |Δprob| vs torch, and
max |Δprob| between scoring the first 32 paragraphs alone and in the timed batches
(0 for a batch-independent predictor: the ONNX model is statically quantised).

Each predictor scores the paragraphs `--repeat` times in its process and its speed is the fastest
pass (as `timeit` advises): on a shared machine one pass of the same model moved by 25% from run
to run, and the slowest passes measure the neighbours, not the predictor.

    python -m benchmarks.bench_predictors [--model models/taggers/default] [--n 2000] [--threads 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from policylens.paths import TAGGER_DIR

PREDICTORS = ("naive", "torch", "onnx")
LABELS = {
    "naive": 'transformers.pipeline("text-classification"), one paragraph per call',
    "torch": "Predictor(backend=torch)",
    "onnx": "Predictor(backend=onnx), static int8",
}


def collect_paragraphs(n: int) -> list[str]:
    """Body paragraphs of the corpus's first documents, in order, until there are n."""
    from policylens.document import Document
    from policylens.io import read_jsonl
    from policylens.paths import CORPUS_PATH
    from policylens.segment import segment

    texts: list[str] = []
    for _, row in read_jsonl(CORPUS_PATH):
        document = Document(id=str(row.get("doc_id") or len(texts)), text=row.get("text") or "")
        texts.extend(p.text for p in segment(document) if p.kind == "body")
        if len(texts) >= n:
            break
    if len(texts) < n:
        raise SystemExit(f"{CORPUS_PATH} has only {len(texts)} body paragraphs, fewer than {n}")
    return texts[:n]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Naive:
    """What a user gets from the stock pipeline: per-paragraph calls, sigmoid scores (recalibrated here)."""

    def __init__(self, model_dir: str, threads: int) -> None:
        import torch
        from transformers import pipeline

        from policylens.tagger.model_dir import TaggerMeta

        torch.set_num_threads(threads)
        self.meta = TaggerMeta.load(model_dir)
        self.pipe = pipeline("text-classification", model=model_dir, top_k=None, function_to_apply="sigmoid",
                             device=-1)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        ids = self.meta.taxonomy.ids
        out = np.zeros((len(texts), len(ids)), dtype=np.float32)
        for i, text in enumerate(texts):
            items = self.pipe(self.meta.prefix + text, truncation=True, max_length=512)
            if items and isinstance(items[0], list):  # some versions nest a single input's scores
                items = items[0]
            for item in items:
                out[i, ids.index(item["label"])] = item["score"]
        # apply the stored temperature to compare F1 fairly (the pipeline knows nothing of calibration)
        p = np.clip(out, 1e-7, 1 - 1e-7)
        logits = np.log(p / (1 - p)) / np.asarray(self.meta.temperature, dtype=np.float32)
        return 1 / (1 + np.exp(-logits))


def worker(name: str, model_dir: str, texts_path: Path, threads: int, batch_size: int, f1: bool, out: Path,
           repeat: int) -> None:
    """Runs in its own process: load, warm up, time the paragraphs (the fastest of `repeat` passes), then
    (untimed) the test split."""
    texts = json.loads(texts_path.read_text(encoding="utf-8"))
    started = time.perf_counter()
    if name == "naive":
        predictor = _Naive(model_dir, threads)
    else:
        from inference.predictor import Predictor

        predictor = Predictor(model_dir, backend=name, num_threads=threads, batch_size=batch_size, summarizer=None)
    load_s = time.perf_counter() - started
    predictor.predict_proba(texts[:8])  # warm-up: first-call allocations, lazy kernels
    passes = []
    for _ in range(repeat):
        started = time.perf_counter()
        probs = predictor.predict_proba(texts)
        passes.append(time.perf_counter() - started)
    run_s = min(passes)
    result = {"name": name, "n": len(texts), "threads": threads, "load_s": load_s, "run_s": run_s,
              "passes_s": [round(t, 2) for t in passes], "per_s": len(texts) / run_s, "peak_rss_mb": _peak_rss_mb()}
    np.save(out.with_suffix(".npy"), probs)
    alone = np.stack([predictor.predict_proba([text])[0] for text in texts[:32]])
    result["batch_vs_alone"] = float(np.abs(alone - probs[: len(alone)]).max()) if len(alone) else 0.0
    if f1:
        from inference.onnx_backend import load_test_split
        from policylens.metrics.multilabel import macro_f1
        from policylens.tagger.model_dir import TaggerMeta

        test_texts, targets = load_test_split()
        thresholds = np.asarray(TaggerMeta.load(model_dir).thresholds, dtype=np.float32)
        predicted = (predictor.predict_proba(test_texts) >= thresholds).astype(int)
        result["test_macro_f1"] = macro_f1(targets, predicted)
        result["test_n"] = len(test_texts)
    out.write_text(json.dumps(result), encoding="utf-8")


def _table(results: list[dict], reference: np.ndarray | None, probs: dict[str, np.ndarray]) -> str:
    naive = next((r for r in results if r["name"] == "naive"), None)
    header = ["predictor", "load s", "paragraphs/s", "x naive", "peak RSS MB", "test macro-F1", "max |Δp| vs torch",
              "max |Δp| batch vs alone"]
    rows = []
    for r in results:
        speedup = f"{r['per_s'] / naive['per_s']:.1f}x" if naive else "-"
        delta = f"{np.abs(probs[r['name']] - reference).max():.4f}" if reference is not None else "-"
        f1 = f"{r['test_macro_f1']:.4f}" if "test_macro_f1" in r else "-"
        rows.append([LABELS[r["name"]], f"{r['load_s']:.1f}", f"{r['per_s']:.1f}", speedup,
                     f"{r['peak_rss_mb']:.0f}", f1, delta, f"{r.get('batch_vs_alone', float('nan')):.1e}"])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def main(argv: list[str] | None = None) -> None:
    from policylens.tagger.scoring import default_threads

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(TAGGER_DIR))
    parser.add_argument("--n", type=int, default=2000, help="paragraphs to time")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, choices=range(1, 11), metavar="1-10",
                        help="timed passes per predictor; its speed is the fastest")
    parser.add_argument("--only", nargs="+", choices=PREDICTORS, default=list(PREDICTORS))
    parser.add_argument("--no-f1", action="store_true", help="skip the test-split macro-F1 runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", choices=PREDICTORS, help=argparse.SUPPRESS)
    parser.add_argument("--texts", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.model, args.texts, args.threads, args.batch_size, not args.no_f1, args.out, args.repeat)
        return

    from policylens.tagger.model_dir import resolve_model_dir

    resolve_model_dir(args.model)
    if "onnx" in args.only:  # export outside the timed worker (once; saved in the model dir)
        from inference.onnx_backend import export_onnx, is_current

        if not is_current(args.model):
            print("exporting the ONNX int8 model ...", file=sys.stderr)
            export_onnx(args.model)
    texts = collect_paragraphs(args.n)
    results, probs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        texts_path = Path(tmp) / "texts.json"
        texts_path.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        for name in args.only:
            out = Path(tmp) / f"{name}.json"
            command = [sys.executable, "-m", "benchmarks.bench_predictors", "--worker", name, "--model", args.model,
                       "--texts", str(texts_path), "--out", str(out), "--threads", str(args.threads),
                       "--batch-size", str(args.batch_size), "--repeat", str(args.repeat)] + (["--no-f1"] if args.no_f1 else [])
            print(f"running {name} ...", file=sys.stderr)
            env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(args.threads)}
            subprocess.run(command, check=True, env=env)
            results.append(json.loads(out.read_text(encoding="utf-8")))
            probs[name] = np.load(out.with_suffix(".npy"))
    reference = probs.get("torch")
    print(f"\n{len(texts)} body paragraphs from the corpus, {args.threads} threads, model {args.model}; speed: the "
          f"fastest of {args.repeat} passes (all passes, seconds: "
          + "; ".join(f"{r['name']} {r['passes_s']}" for r in results) + ")\n")
    print(_table(results, reference, probs))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
