"""What the lexical half of an ensemble tagger costs: encoder alone vs the ensemble vs TF-IDF alone,
in one process on the same corpus paragraphs (so a busy machine slows all three alike).

    python -m benchmarks.bench_ensemble_cost [--model models/taggers/default] [--n 400] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

from benchmarks.bench_predictors import collect_paragraphs
from policylens.paths import TAGGER_DIR


def main() -> None:
    from inference.predictor import Predictor

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(TAGGER_DIR))
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="onnx", choices=("onnx", "torch"))
    args = parser.parse_args()
    texts = collect_paragraphs(args.n)
    predictor = Predictor(args.model, backend=args.backend, num_threads=args.threads, summarizer=None)
    if predictor._lexical is None:
        raise SystemExit(f"{args.model}: not an ensemble tagger (no lexical model)")
    predictor.predict_proba(texts[:8])  # warm-up
    runs = {"encoder alone": predictor.calibrated_encoder_proba, "ensemble": predictor.predict_proba,
            "TF-IDF alone": predictor._lexical.decision_function}
    best = {name: float("inf") for name in runs}
    for _ in range(2):
        for name, run in runs.items():
            started = time.perf_counter()
            run(texts)
            best[name] = min(best[name], time.perf_counter() - started)
    print(f"{len(texts)} corpus paragraphs, {args.backend}, {args.threads} threads, best of 2")
    for name, seconds in best.items():
        print(f"| {name} | {len(texts) / seconds:.1f} paragraphs/s |")


if __name__ == "__main__":
    main()
