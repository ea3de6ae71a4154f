"""What summaries cost `policylens tag`: the same documents tagged with and without them, in one run.

Run: HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.bench_tag_summary [--n 200] [--threads 2] [--repeats 1]

The first `n` documents of the shared corpus (../shared/data/corpus_docs.jsonl) are written
to a temporary JSON Lines file; each setting runs `policylens tag FILE --format jsonl -o OUT`
in a fresh process (model loading included, as a user sees it), the two settings
alternating when repeated. Printed side by side: wall time, the time `tag` reports for
its own loop, paragraphs/s, and the ratio summaries-on / summaries-off; then what the
summaries were made of (method counts) and the summariser's encoding cache.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from policylens.paths import CORPUS_PATH, TAGGER_DIR

_LINE = re.compile(r"(?P<docs>\d+) documents .*?, (?P<paras>\d+) paragraphs in (?P<seconds>[\d.]+) s")


def _sample(corpus: Path, n: int, out: Path) -> int:
    written = 0
    with corpus.open(encoding="utf-8") as src, out.open("w", encoding="utf-8") as dst:
        for line in src:
            if written >= n:
                break
            if line.strip():
                dst.write(line)
                written += 1
    return written


def _run(inputs: Path, model: Path, out: Path, summary: bool, threads: int, backend: str | None) -> dict:
    command = [str(Path(sys.executable).with_name("policylens")), "tag", str(inputs), "--model", str(model),
               "--format", "jsonl", "-o", str(out), "--no-progress", "--threads", str(threads),
               "--summary" if summary else "--no-summary", *(["--backend", backend] if backend else [])]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    match = _LINE.search(done.stderr)
    methods: Counter = Counter()
    for line in out.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if summary:
            methods[(record.get("summary") or {}).get("method") or f"none ({record.get('summary_error')})"] += 1
    return {"wall": wall, "loop": float(match["seconds"]) if match else float("nan"),
            "paragraphs": int(match["paras"]) if match else 0, "methods": methods}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="documents from the start of the corpus")
    parser.add_argument("--corpus", type=Path, default=CORPUS_PATH)
    parser.add_argument("--model", type=Path, default=TAGGER_DIR)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--backend", choices=("torch", "onnx"), help="default: the model's own setting")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-tag-summary-") as tmp:
        inputs = Path(tmp) / "docs.jsonl"
        n = _sample(args.corpus, args.n, inputs)
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for r in range(args.repeats):
            for summary in ((False, True) if r % 2 == 0 else (True, False)):
                result = _run(inputs, args.model, Path(tmp) / f"out-{int(summary)}-{r}.jsonl", summary, args.threads,
                              args.backend)
                runs[summary].append(result)
                print(f"run {r + 1}: summaries {'on ' if summary else 'off'} {result['wall']:.1f} s wall, "
                      f"{result['loop']:.1f} s in tag's loop", flush=True)
    best = {k: min(v, key=lambda x: x["wall"]) for k, v in runs.items()}
    off, on = best[False], best[True]
    print(f"\n{n} corpus documents, {off['paragraphs']} paragraphs, {args.threads} threads, "
          f"model {args.model}, backend {args.backend or 'the model default'} (best of {args.repeats})\n")
    print("| `policylens tag` | wall s (process) | tag loop s | paragraphs/s (loop) |")
    print("|---|---:|---:|---:|")
    for name, r in (("--no-summary", off), ("with summaries", on)):
        print(f"| {name} | {r['wall']:.1f} | {r['loop']:.1f} | {r['paragraphs'] / max(r['loop'], 1e-9):.1f} |")
    print(f"| ratio | {on['wall'] / off['wall']:.2f}x | {on['loop'] / off['loop']:.2f}x | |")
    print(f"\nsummary methods: {dict(on['methods'])}")


if __name__ == "__main__":
    main()
