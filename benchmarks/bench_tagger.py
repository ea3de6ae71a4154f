"""Benchmark: train and score the BERT tagger and both baselines in one run.

    python -m benchmarks.bench_tagger [--epochs 4] [--learning-rate 1e-4] [--out models/taggers/bench]

Each system runs in its own subprocess so its training time and peak memory
are its own. Prints one table: test per-label F1, macro/micro-F1, exact match,
train+eval seconds, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from policylens.paths import MODELS_DIR


def _splits(seed: int):
    from policylens.dataset import SplitConfig, labelled_splits

    taxonomy, _, splits = labelled_splits(config=SplitConfig(seed=seed))
    return taxonomy, splits


def run_one(system: str, args: argparse.Namespace) -> dict:
    """Train (if needed) and evaluate one system in this process."""
    from training.evaluate import evaluate_system
    from training.tagger import TaggerConfig, train_tagger

    taxonomy, splits = _splits(args.seed)
    started = time.time()
    model_dir = None
    if system == "bert":
        model_dir = Path(args.out)
        if not args.reuse or not (model_dir / "policylens.json").exists():
            config = TaggerConfig(epochs=args.epochs, learning_rate=args.learning_rate, max_length=args.max_length,
                                  seed=args.seed, num_threads=args.threads)
            train_tagger(splits, taxonomy, model_dir, config, progress=False)
    report = evaluate_system(system, splits, taxonomy, model_dir)
    report["seconds"] = round(time.time() - started, 1)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=None, help="Torch threads for training.")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", default=str(MODELS_DIR / "taggers" / "bench"))
    parser.add_argument("--reuse", action="store_true", help="Score an already trained --out instead of training.")
    parser.add_argument("--system", help=argparse.SUPPRESS)  # internal: run one system, print JSON
    args = parser.parse_args(argv)
    if args.system:
        print(json.dumps(run_one(args.system, args)))
        return

    from policylens.metrics import markdown_table
    from policylens.taxonomy import Taxonomy

    reports = {}
    for system in ("keyword", "tfidf", "bert"):
        cmd = [sys.executable, "-m", "benchmarks.bench_tagger", "--system", system, *(argv or sys.argv[1:])]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        reports[system] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{system}: macro-F1 {reports[system]['macro_f1']:.4f} in {reports[system]['seconds']} s", flush=True)
    labels = Taxonomy.load().ids
    print()
    print(markdown_table(reports, labels))
    print()
    print("| system | train+eval seconds | peak RSS MB |")
    print("|---|---|---|")
    for system, report in reports.items():
        print(f"| {system} | {report['seconds']} | {report['peak_rss_mb']} |")


if __name__ == "__main__":
    main()
