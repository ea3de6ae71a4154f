"""`policylens serve`: run the HTTP API (inference/server/) under uvicorn.

Kept out of policylens/cli.py so the CLI imports nothing from FastAPI unless
this command runs; policylens/cli.py calls `register(app)`.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Optional

import typer

from inference.server.limits import (
    DEFAULT_LIMITS,  # no FastAPI: the CLI stays light until `serve` runs
)
from training.store import DEFAULT_STORE_DIR


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _refuse_broken_model(model_or_pointer: Path) -> None:
    """Check the first model before uvicorn starts: a failure in its startup prints a traceback."""
    from policylens.tagger.integrity import check_model_dir
    from policylens.tagger.model_dir import follow_pointer

    first = follow_pointer(model_or_pointer)
    problems = check_model_dir(first)
    if problems:
        typer.echo(f"error: refusing to serve {first}: {problems[0]}", err=True)
        raise typer.Exit(2)


def _desk(host: str, port: int, workers: int, token: Optional[str], read_only: bool, store: Path, desk_dir: Path,
          registry: Optional[Path], epochs: int, threads: int):
    """The review desk's settings and backend; says on stderr where it is and whether it takes writes."""
    from inference.server.desk import DeskConfig
    from policylens.cli.desk import build_backend
    from policylens.taxonomy import DEFAULT_TAXONOMY_PATH

    reason = None
    if read_only:
        reason = "the server was started with --read-only"
    elif workers > 1:
        reason = "the server runs several worker processes (the desk needs --workers 1)"
    elif token is None and not _is_loopback(host):
        reason = f"the server listens on {host}, beyond 127.0.0.1, and was started without --write-token"
    try:
        config = DeskConfig(read_only=reason, write_token=token, data_dir=desk_dir)
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    backend = build_backend(store, DEFAULT_TAXONOMY_PATH, True, registry, epochs=epochs, threads=threads)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    mode = f"read-only: {reason}" if reason else "writes need the token" if token else "writes on (local only)"
    typer.echo(f"review desk: http://{shown}:{port}/ ({mode}); labels go to {store}", err=True)
    return config, backend


def register(app: typer.Typer) -> None:
    """Add the top-level `serve` command to `app`."""

    @app.command()
    def serve(
        model: Optional[Path] = typer.Option(
            None, "--model", "-m", help="Tagger directory to serve [default: models/taggers/default]."
        ),
        host: str = typer.Option("127.0.0.1", help="Interface to bind. The API has no auth: keep it on loopback "
                                 "(the review desk's writes need --write-token beyond it)."),
        port: int = typer.Option(8000, help="TCP port."),
        workers: int = typer.Option(1, min=1, help="Processes; each loads its own copy of the model."),
        registry: Optional[Path] = typer.Option(
            None, "--registry", help="Pointer file naming the model dir to serve (e.g. models/registry/CURRENT); "
            "it is watched and a newly promoted model is hot-swapped in.",
        ),
        poll_seconds: float = typer.Option(
            DEFAULT_LIMITS.poll_seconds, help="How often to check for a new model (0: only POST /v1/admin/reload)."
        ),
        max_batch: int = typer.Option(
            DEFAULT_LIMITS.max_batch, min=1, help="Most paragraphs per request and per model call."
        ),
        max_chars: int = typer.Option(
            DEFAULT_LIMITS.max_chars, min=1, help="Longest paragraph / document text accepted."
        ),
        max_wait_ms: float = typer.Option(
            DEFAULT_LIMITS.max_wait_ms, min=0.0, help="How long a batch waits for more concurrent requests."
        ),
        threads: Optional[int] = typer.Option(None, min=1, help="Torch threads per worker [default: min(4, CPUs)]."),
        log_level: str = typer.Option("info", help="uvicorn log level."),
        write_token: Optional[str] = typer.Option(
            None, "--write-token", envvar="POLICYLENS_WRITE_TOKEN", show_envvar=True,
            help="Review desk: writes (upload, correct, retrain, promote, rollback) must send this token. "
            "Needed for any write when --host is beyond 127.0.0.1 (without it the desk is read-only).",
        ),
        read_only: bool = typer.Option(False, "--read-only", help="Review desk: refuse every write."),
        store: Path = typer.Option(DEFAULT_STORE_DIR, "--store", help="Review desk: the label store corrections go to."),
        desk_dir: Path = typer.Option(Path("out/desk"), "--desk-dir", help="Review desk: where uploaded documents are kept."),
        retrain_epochs: int = typer.Option(2, "--retrain-epochs", min=1, help="Review desk: epochs of a retraining."),
        retrain_threads: int = typer.Option(1, "--retrain-threads", min=1,
                                            help="Review desk: torch threads of a retraining (the rest serve)."),
    ) -> None:
        """Serve tagging and document analysis over HTTP (OpenAPI docs at /docs) and the review desk at /."""
        import logging

        import uvicorn

        from inference.server.app import DEFAULT_MODEL_DIR, create_app

        model_dir = model if model is not None else (None if registry is not None else DEFAULT_MODEL_DIR)
        if model_dir is not None and not (Path(model_dir) / "policylens.json").exists():
            typer.echo(f"error: {model_dir} is not a policylens tagger dir (no policylens.json); "
                       "train one with `policylens train` or pass --model", err=True)
            raise typer.Exit(2)
        if registry is not None and not registry.exists() and model_dir is None:
            typer.echo(f"error: registry pointer {registry} does not exist", err=True)
            raise typer.Exit(2)
        _refuse_broken_model(model_dir if model_dir is not None else registry)
        if not _is_loopback(host):
            typer.echo(f"warning: binding {host}: the API has no authentication (incl. /v1/admin/reload)", err=True)
        desk_config, desk_backend = _desk(host, port, workers, write_token, read_only, store, desk_dir, registry,
                                          retrain_epochs, retrain_threads)

        # uvicorn configures only its own loggers; this shows model loads, swaps and reload failures.
        level = getattr(logging, log_level.upper(), logging.INFO)
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if workers == 1:
            app_ = create_app(
                model_dir, registry_pointer=registry, max_batch=max_batch, max_chars=max_chars,
                max_wait_ms=max_wait_ms, poll_seconds=poll_seconds, num_threads=threads,
                desk_backend=desk_backend, desk_config=desk_config,
            )
            uvicorn.run(app_, host=host, port=port, log_level=log_level)
            return
        # Several processes need an import string; the factory reads its settings from the environment.
        settings = {
            "POLICYLENS_SERVE_MODEL": str(Path(model_dir).resolve()) if model_dir is not None else "",
            "POLICYLENS_SERVE_REGISTRY": str(registry.resolve()) if registry is not None else "",
            "POLICYLENS_SERVE_MAX_BATCH": str(max_batch),
            "POLICYLENS_SERVE_MAX_CHARS": str(max_chars),
            "POLICYLENS_SERVE_MAX_WAIT_MS": str(max_wait_ms),
            "POLICYLENS_SERVE_POLL_SECONDS": str(poll_seconds),
            "POLICYLENS_SERVE_THREADS": str(threads or max(1, (os.cpu_count() or 1) // workers)),
        }
        os.environ.update(settings)
        uvicorn.run(
            "inference.server.app:create_app_from_env", factory=True, host=host, port=port,
            workers=workers, log_level=log_level,
        )
