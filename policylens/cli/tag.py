"""`policylens tag`: the batch tagger on the command line (wired in with `register(app)`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from inference.batch import ENGINES, FORMATS
from policylens.paths import TAGGER_DIR


def tag(
    inputs: list[str] = typer.Argument(..., help="Files, folders (recursive), globs, JSON Lines corpora, or - for stdin."),
    model: Path = typer.Option(TAGGER_DIR, "--model", "-m", help="Tagger directory (from `policylens train`)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="torch | onnx (default: the model's setting, else torch)."),
    fmt: str = typer.Option("jsonl", "--format", "-f", help=f"Output format: {' | '.join(FORMATS)}."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output file (written atomically); default stdout."),
    summary: bool = typer.Option(True, "--summary/--no-summary", help="Summarise each document."),
    resume: bool = typer.Option(False, "--resume", help="Skip documents already done in --out (or its .part file)."),
    engine: str = typer.Option("local", "--engine", help=f"{' | '.join(ENGINES)} (ray needs the `scale` extra)."),
    workers: int = typer.Option(1, "--workers", help="Ray actors, one predictor each (--engine ray)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads per predictor (default: what the machine allows, max 4)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Paragraph windows per model call."),
    text_field: str = typer.Option("text", help="Text field of JSON Lines inputs."),
    id_field: str = typer.Option("doc_id", help="Id field of JSON Lines inputs."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
) -> None:
    """Tag every paragraph of many documents; write JSON Lines, CSV, Markdown or HTML.

    Unreadable inputs (undecodable, blank after normalisation, symlink loops, FIFOs and other
    non-regular files) become error records and the run goes on; the exit status is 1 when no
    document (or, with nothing resumed, no paragraph) came out.
    """
    from rich.console import Console

    from inference.batch import BatchConfig, run_batch
    from policylens.io import InputError

    err = Console(stderr=True, soft_wrap=True)
    config: BatchConfig | None = None
    try:
        config = BatchConfig(
            model_dir=model, backend=backend, fmt=fmt, out=out, summary=summary, resume=resume, engine=engine,
            workers=workers, num_threads=threads, batch_size=batch_size, text_field=text_field, id_field=id_field,
        )
        report = run_batch(inputs, config, progress=progress, log=lambda m: err.print(m, markup=False, highlight=False))
    except (InputError, ValueError, ImportError) as error:
        err.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        hint = f"; rerun with --resume to continue from {config.part_path}" if config and config.out else ""
        err.print(f"[yellow]interrupted[/yellow]{hint}", highlight=False)
        raise typer.Exit(130) from None
    err.print(report.line(), markup=False, highlight=False)
    if report.documents == 0 or (report.resumed == 0 and report.paragraphs == 0):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the top-level `tag` command to the policylens app."""
    app.command(name="tag")(tag)
