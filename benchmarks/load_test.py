"""Load test for the HTTP API: throughput and latency at 1, 8, 32 and 64 concurrent clients,
next to the batch path's throughput on the same paragraphs.

Starts `uvicorn inference.server.app:create_app_from_env` as a subprocess on
127.0.0.1 (a free port; loopback only), sends real paragraphs segmented from a
few documents of ../shared/data/corpus_docs.jsonl (read at run time, never
stored), and prints one row per concurrency level. Every level is bounded by
`--duration` seconds and `--requests` requests per client, whichever comes
first, and the server is always stopped, so the script ends by itself.

Before the server starts, the same paragraphs are tagged in one batch by a fresh
process (Predictor.predict, the model's default backend and the same thread count:
what `policylens tag` runs), and each level's paragraphs/s is shown as a share of it.

The server's tuning knobs are flags: --max-batch, --max-wait-ms, --threads,
--request-timeout (each sets the POLICYLENS_SERVE_* variable the server reads).

    python -m benchmarks.load_test [--model models/taggers/default] [--clients 1,8,32,64] [--duration 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from inference.server.limits import DEFAULT_LIMITS
from policylens.paths import CORPUS_PATH, REPO_ROOT, TAGGER_DIR

HOST = "127.0.0.1"


@dataclass
class LevelResult:
    clients: int
    requests: int
    errors: int
    paragraphs: int
    seconds: float
    p50_ms: float
    p95_ms: float
    mean_batch: float  # paragraphs per model call on the server during this level

    @property
    def req_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def par_per_s(self) -> float:
        return self.paragraphs / self.seconds if self.seconds else 0.0


def load_paragraphs(corpus: Path, n_docs: int, min_chars: int = 10) -> list[str]:
    """Body paragraphs of `n_docs` documents spread over the corpus (kept in memory only)."""
    from policylens.document import Document
    from policylens.io import read_jsonl
    from policylens.segment import segment

    rows = [row for _, row in read_jsonl(corpus)]
    if not rows:
        raise SystemExit(f"{corpus}: no documents")
    step = max(1, len(rows) // n_docs)
    paragraphs: list[str] = []
    for row in rows[::step][:n_docs]:
        document = Document(id=str(row.get("doc_id", "doc")), text=str(row.get("text", "")))
        paragraphs += [p.text for p in segment(document) if p.kind == "body" and len(p.text) >= min_chars]
    if not paragraphs:
        raise SystemExit(f"{corpus}: no paragraphs in the first {n_docs} documents sampled")
    return paragraphs


def request_bodies(paragraphs: list[str], per_request: int, seed: int = 0) -> list[dict[str, list[str]]]:
    """Consecutive paragraphs grouped into request bodies (like a client tagging a document in chunks),
    shuffled once so that any prefix is a representative mix of lengths."""
    bodies = [
        {"paragraphs": paragraphs[i : i + per_request]}
        for i in range(0, len(paragraphs) - per_request + 1, per_request)
    ] or [{"paragraphs": paragraphs[:per_request]}]
    random.Random(seed).shuffle(bodies)
    return bodies


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_server(
    model: Path, port: int, max_batch: int, max_wait_ms: float, log_path: Path,
    threads: int | None = None, request_timeout_s: float | None = None,
) -> subprocess.Popen:
    env = os.environ | {
        "POLICYLENS_SERVE_MODEL": str(model.resolve()),
        "POLICYLENS_SERVE_MAX_BATCH": str(max_batch),
        "POLICYLENS_SERVE_MAX_WAIT_MS": str(max_wait_ms),
        "POLICYLENS_SERVE_POLL_SECONDS": "0",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if threads:
        env["POLICYLENS_SERVE_THREADS"] = str(threads)
    if request_timeout_s is not None:
        env["POLICYLENS_SERVE_REQUEST_TIMEOUT_S"] = str(request_timeout_s)
    command = [
        sys.executable, "-m", "uvicorn", "inference.server.app:create_app_from_env", "--factory",
        "--host", HOST, "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]
    with log_path.open("wb") as log:
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(url: str, process: subprocess.Popen, timeout: float, log_path: Path) -> str:
    """The served model version once /healthz answers; exits with the server log if it dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = log_path.read_text(errors="replace")[-3000:]
            raise SystemExit(f"server exited with {process.returncode}:\n{log}")
        try:
            response = httpx.get(f"{url}/healthz", timeout=2)
            if response.status_code == 200:
                return response.json()["model_version"]
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"server not ready after {timeout:.0f}s:\n{log_path.read_text(errors='replace')[-3000:]}")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_BATCH_CODE = """
import json, sys, time
from inference.predictor import Predictor
args = json.loads(sys.argv[1])
paragraphs = json.loads(open(args["paragraphs"], encoding="utf-8").read())
predictor = Predictor(args["model"], num_threads=args["threads"], summarizer=None)
predictor.predict(paragraphs[:8])  # first calls allocate, as the server's warm-up does
started = time.perf_counter()
predictor.predict(paragraphs)
seconds = time.perf_counter() - started
print(json.dumps({"backend": predictor.backend, "threads": predictor.num_threads, "seconds": seconds,
                  "paragraphs": len(paragraphs), "per_s": len(paragraphs) / seconds}))
"""


def batch_throughput(model: Path, paragraphs: list[str], threads: int | None, tmp: Path) -> dict:
    """Paragraphs/s of one Predictor.predict call over all `paragraphs`, in a fresh process
    (the model's default backend, as `policylens tag` and the server use)."""
    import json

    path = tmp / "paragraphs.json"
    path.write_text(json.dumps(paragraphs, ensure_ascii=False), encoding="utf-8")
    arg = json.dumps({"model": str(model.resolve()), "threads": threads, "paragraphs": str(path)})
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run([sys.executable, "-c", _BATCH_CODE, arg], cwd=REPO_ROOT, env=env, check=False,
                            capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise SystemExit(f"batch baseline failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_level(url: str, clients: int, bodies: list[dict], duration: float, max_requests: int) -> LevelResult:
    latencies: list[float] = []
    errors = paragraphs = 0
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        before = (await http.get("/v1/stats")).json()["tag"]
        deadline = time.perf_counter() + duration
        sent = 0

        async def client(k: int) -> None:
            nonlocal errors, paragraphs, sent
            for _ in range(max_requests):
                if time.perf_counter() >= deadline:
                    return
                body = bodies[sent % len(bodies)]  # every level walks the same mix, in the same order
                sent += 1
                started = time.perf_counter()
                try:
                    response = await http.post("/v1/tag", json=body)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                if ok:
                    paragraphs += len(body["paragraphs"])
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(clients)))
        seconds = time.perf_counter() - started
        after = (await http.get("/v1/stats")).json()["tag"]
    calls = after["batches"] - before["batches"]
    mean_batch = (after["batched_items"] - before["batched_items"]) / calls if calls else 0.0
    return LevelResult(
        clients=clients, requests=len(latencies), errors=errors, paragraphs=paragraphs, seconds=seconds,
        p50_ms=1000 * _percentile(latencies, 0.50), p95_ms=1000 * _percentile(latencies, 0.95), mean_batch=mean_batch,
    )


def format_table(rows: list[LevelResult], batch_per_s: float | None = None) -> str:
    header = (f"{'clients':>7} {'requests':>8} {'req/s':>8} {'para/s':>8} {'vs batch':>8} {'p50 ms':>8} "
              f"{'p95 ms':>8} {'errors':>6} {'batch':>6}")
    lines = [header, "-" * len(header)]
    for r in rows:
        share = f"{r.par_per_s / batch_per_s:>8.0%}" if batch_per_s else f"{'-':>8}"
        lines.append(
            f"{r.clients:>7} {r.requests:>8} {r.req_per_s:>8.2f} {r.par_per_s:>8.1f} {share} "
            f"{r.p50_ms:>8.0f} {r.p95_ms:>8.0f} {r.errors:>6} {r.mean_batch:>6.1f}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=TAGGER_DIR, help="tagger directory")
    parser.add_argument("--corpus", type=Path, default=CORPUS_PATH, help="JSON Lines documents (text field)")
    parser.add_argument("--docs", type=int, default=12, help="documents to segment for request paragraphs")
    parser.add_argument("--clients", default="1,8,32,64", help="comma-separated concurrency levels")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per level at most")
    parser.add_argument("--requests", type=int, default=50, help="requests per client per level at most")
    parser.add_argument("--paragraphs", type=int, default=4, help="paragraphs per request")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_LIMITS.max_batch, help="server max_batch")
    parser.add_argument(
        "--max-wait-ms", type=float, default=DEFAULT_LIMITS.max_wait_ms, help="server micro-batch wait"
    )
    parser.add_argument("--threads", type=int, default=None,
                        help="model threads, server and batch baseline alike [default: the server's own]")
    parser.add_argument("--request-timeout", type=float, default=None,
                        help=f"server time limit per request, s [default {DEFAULT_LIMITS.request_timeout_s:g}]")
    parser.add_argument("--no-batch-baseline", action="store_true", help="skip the batch throughput reference")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.model / "policylens.json").exists():
        print(f"error: {args.model} is not a tagger dir (no policylens.json); pass --model", file=sys.stderr)
        return 2
    levels = [int(x) for x in args.clients.split(",") if x.strip()]
    paragraphs = load_paragraphs(args.corpus, args.docs)
    bodies = request_bodies(paragraphs, args.paragraphs)
    port = free_port()
    url = f"http://{HOST}:{port}"
    with tempfile.TemporaryDirectory(prefix="policylens-load-") as tmp:
        batch = None
        if not args.no_batch_baseline:
            # the paragraphs the clients send (each level walks the same bodies)
            sent = [p for body in bodies for p in body["paragraphs"]]
            batch = batch_throughput(args.model, sent, args.threads, Path(tmp))
            print(f"batch: {batch['paragraphs']} paragraphs in {batch['seconds']:.1f}s = {batch['per_s']:.1f} "
                  f"paragraphs/s (Predictor.predict, backend {batch['backend']}, {batch['threads']} threads)",
                  flush=True)
        batch_per_s = batch["per_s"] if batch else None
        log_path = Path(tmp) / "server.log"
        process = start_server(args.model, port, args.max_batch, args.max_wait_ms, log_path,
                               threads=args.threads, request_timeout_s=args.request_timeout)
        try:
            version = wait_ready(url, process, args.startup_timeout, log_path)
            print(f"model {version} from {args.model}; {len(paragraphs)} paragraphs from {args.docs} documents, "
                  f"{args.paragraphs} per request; <= {args.duration:.0f}s or {args.requests} requests per client per level")
            asyncio.run(run_level(url, 1, bodies[:3], 60, 3))  # warm-up: first calls allocate
            print("\n".join(format_table([]).splitlines()[:2]), flush=True)
            rows = []
            for clients in levels:
                budget = args.duration + 180  # a request in flight at the deadline may still finish
                rows.append(asyncio.run(asyncio.wait_for(
                    run_level(url, clients, bodies, args.duration, args.requests), budget)))
                print(format_table(rows[-1:], batch_per_s).splitlines()[-1], flush=True)
        finally:
            stop_server(process)
    print("\nsummary" + (f" (batch: {batch_per_s:.1f} paragraphs/s on the same paragraphs)" if batch_per_s else ""))
    print(format_table(rows, batch_per_s))
    return 1 if any(r.errors for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
