"""Benchmark the summarisers: held-out news (train the scorer first if needed), and optionally the
cross-validated policy set; print the ROUGE tables.

Run: HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.bench_summaries [--max-docs N] [--policy] [--out report.md] [--retrain]
(the protocols are in inference/summary_eval.py; `policylens evaluate-summaries` runs the same).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from inference.summary_eval import evaluate_summaries
from policylens.cli.summarize import policy_cross_validation, sentence_encoder
from policylens.paths import SUMMARIZER_DIR
from policylens.summarizer.model_dir import exists
from training.summarizer.train import train_summarizer


def main(argv: Sequence[str] | None = None) -> None:
    """Train if needed, evaluate, print the ROUGE tables of all systems (and write Markdown with --out)."""
    import torch
    from rich.console import Console

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-docs", type=int, default=500)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--policy", action="store_true", help="also cross-validate on the policy documents")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    console = Console()
    model_dir = args.model_dir or SUMMARIZER_DIR
    if args.retrain or not exists(model_dir):
        console.print(f"training the scorer into {model_dir}")
        train_summarizer(model_dir, encoder=sentence_encoder(num_threads=2, log=console.print), log=console.print)
    report = evaluate_summaries(args.max_docs, model_dir=model_dir, log=console.print)
    console.print(report.table())
    console.print(report.meta)
    parts = [report.markdown()]
    if args.policy:
        policy = policy_cross_validation(args.folds, log=console.print)
        console.print(policy.table())
        parts.append(policy.markdown())
    if args.out:
        args.out.write_text("\n".join(parts), encoding="utf-8")
        console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
