"""The one `policylens` command; each sub-command is a thin wrapper over a library function."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Tag, summarise and serve Chinese industrial-policy documents, offline.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _mount_subcommands() -> None:
    """Sub-apps live next to the code they drive; mount the ones that are installed."""
    from inference import serve_cli, summarize_cli, tag_cli
    from training import retrain_cli
    from training.backbone import cli as backbone_cli

    app.add_typer(backbone_cli, name="backbone")
    for module in (summarize_cli, tag_cli, serve_cli, retrain_cli):
        module.register(app)


def _paragraph_table(document, known: dict[str, list[str]]) -> Table:
    view = Table(title=f"{document.id}  {document.title or ''}", expand=True)
    view.add_column("id", no_wrap=True)
    view.add_column("kind")
    view.add_column("labels")
    view.add_column("text", ratio=1, no_wrap=True, overflow="ellipsis")
    for paragraph in document.paragraphs:
        labels = known.get(paragraph.text)
        shown = "?" if labels is None else (", ".join(labels) or "-")
        view.add_row(paragraph.id, paragraph.kind, shown, paragraph.text[:60])
    return view


@app.command()
def segment(
    inputs: list[str] = typer.Argument(..., help="Files, folders, globs, JSON Lines corpora, or - for stdin."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write paragraphs as JSON Lines here."),
    table: bool = typer.Option(False, "--table", help="Print a table of paragraphs (with seed labels when known)."),
    max_chars: int = typer.Option(400, help="Cut longer paragraphs at sentence ends."),
    text_field: str = typer.Option("text", help="Text field of JSON Lines inputs."),
) -> None:
    """Read documents and split them into labelled-ready paragraphs."""
    from policylens.ingest import IngestError, iter_inputs
    from policylens.io import atomic_write, read_jsonl
    from policylens.paths import SEED_ANNOTATIONS_PATH
    from policylens.segment import SegmentConfig, segment as segment_document

    config = SegmentConfig(max_chars=max_chars)
    known: dict[str, list[str]] = {}
    if table and SEED_ANNOTATIONS_PATH.exists():
        known = {row["text"]: row["labels"] for _, row in read_jsonl(SEED_ANNOTATIONS_PATH)}

    n_docs = n_paragraphs = n_errors = 0
    with ExitStack() as stack:
        handle = stack.enter_context(atomic_write(out)) if out else None
        for item in iter_inputs(inputs, text_field=text_field):
            if isinstance(item, IngestError):
                n_errors += 1
                err_console.print(f"[yellow]skipped[/yellow] {item}")
                continue
            paragraphs = segment_document(item, config)
            n_docs += 1
            n_paragraphs += len(paragraphs)
            if handle:
                for paragraph in paragraphs:
                    handle.write(json.dumps(paragraph.to_dict(), ensure_ascii=False) + "\n")
            if table:
                console.print(_paragraph_table(item, known))
    console.print(f"{n_docs} documents, {n_paragraphs} paragraphs, {n_errors} skipped")
    if n_docs == 0:
        raise typer.Exit(1)


@app.command()
def export(
    corpus: Path = typer.Argument(..., help="JSON Lines corpus (doc_id, text, optional title/source/date)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write one UTF-8 .txt file per document into."),
    source: Optional[list[str]] = typer.Option(None, "--source", help="Keep only rows with this `source` (repeatable)."),
    limit: int = typer.Option(5, help="Documents per source (or in all, without --source)."),
) -> None:
    """Write documents of a JSON Lines corpus as a folder of text files (e.g. an inbox for `tag`)."""
    from policylens.io import InputError, atomic_write, read_jsonl

    counts: dict[str, int] = {}
    try:
        for lineno, row in read_jsonl(corpus):
            key = str(row.get("source")) if source else "*"
            if (source and key not in source) or counts.get(key, 0) >= limit or not row.get("text"):
                continue
            counts[key] = counts.get(key, 0) + 1
            name = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(row.get("doc_id") or lineno))
            with atomic_write(out / f"{name}.txt") as handle:
                handle.write(row["text"])
    except InputError as err:
        _fail(str(err))
    console.print(f"wrote {sum(counts.values())} documents to {out}")


DEFAULT_TAGGER = "models/taggers/default"


def _splits(data: list[Path] | None, silver: bool, dev: float, test: float, seed: int):
    from policylens.dataset import SplitConfig, labelled_splits

    taxonomy, sources, splits = labelled_splits(data or [], silver, SplitConfig(dev=dev, test=test, seed=seed))
    console.print(f"data: {', '.join(str(s) for s in sources)}")
    console.print("splits: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    return taxonomy, splits


@app.command()
def train(
    out: Path = typer.Option(Path(DEFAULT_TAGGER), "--out", "-o", help="Model directory to write."),
    data: Optional[list[Path]] = typer.Option(None, "--data", help="Extra labelled JSON Lines files."),
    silver: bool = typer.Option(True, help="Include ../shared/data/train_silver.jsonl when present."),
    backbone: Optional[str] = typer.Option(None, help="Local dir or hub id (default: converted multilingual-e5-small)."),
    epochs: int = typer.Option(4),
    batch_size: int = typer.Option(16),
    learning_rate: float = typer.Option(5e-5),
    max_length: int = typer.Option(256),
    freeze_embeddings: bool = typer.Option(True, help="Freeze the word embeddings (much faster on CPU)."),
    freeze_layers: int = typer.Option(8, help="Freeze (and cache) the lowest N transformer layers; 0 trains all."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after N optimiser steps (smoke runs)."),
    resume: bool = typer.Option(False, help="Continue an interrupted run from its last checkpoint."),
    seed: int = typer.Option(13),
) -> None:
    """Fine-tune the paragraph tagger; writes a self-describing model directory."""
    from policylens.io import InputError
    from training.tagger import TaggerConfig, train_tagger

    try:
        taxonomy, splits = _splits(data, silver, 0.1, 0.15, seed)
        config = TaggerConfig(
            backbone=backbone, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
            max_length=max_length, freeze_embeddings=freeze_embeddings, freeze_layers=freeze_layers,
            max_steps=max_steps, seed=seed,
        )
        result = train_tagger(splits, taxonomy, out, config, resume=resume)
    except (InputError, ValueError) as err:
        _fail(str(err))
    console.print(f"saved {result.model_dir} in {result.seconds / 60:.1f} min")
    for split, report in result.metrics.items():
        console.print(f"{split}: macro-F1 {report['macro_f1']:.4f}  micro-F1 {report['micro_f1']:.4f}")


@app.command()
def evaluate(
    model: Path = typer.Option(Path(DEFAULT_TAGGER), "--model", "-m", help="Tagger directory to evaluate."),
    data: Optional[list[Path]] = typer.Option(None, "--data", help="Extra labelled JSON Lines files (as in training)."),
    silver: bool = typer.Option(True, help="Include ../shared/data/train_silver.jsonl when present."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for evaluation.json/.md (default: the model dir)."),
    baselines: bool = typer.Option(True, help="Also fit and score the TF-IDF and keyword baselines."),
    test: Optional[list[Path]] = typer.Option(
        None, "--test", help="Score on these labelled JSON Lines files instead of the test split "
        "(e.g. paragraphs from other documents labelled by reading; labels outside the taxonomy are ignored)."),
    seed: int = typer.Option(13),
) -> None:
    """Score the tagger and the baselines on the same test split; write JSON and a Markdown table."""
    from inference.model_dir import TaggerMeta
    from policylens.io import InputError
    from training.evaluate import evaluate_all, write_reports
    from training.metrics import markdown_table
    from training.tagger import data_fingerprint

    try:
        taxonomy, splits = _splits(data, silver, 0.1, 0.15, seed)
        has_model = (model / "policylens.json").exists()
        if not has_model and not baselines:
            _fail(f"{model}: no trained tagger there; run `policylens train` first")
        if has_model and TaggerMeta.load(model).data.get("fingerprint") != data_fingerprint(splits):
            err_console.print(f"[yellow]warning:[/yellow] {model} was trained on different data or splits")
        if test:
            from policylens.dataset import load_labelled

            rows = load_labelled(test, taxonomy, drop_unknown_labels=True)
            splits["test"] = [{**row, "targets": taxonomy.multi_hot(row["labels"])} for row in rows]
            console.print(f"test: {len(rows)} rows from {', '.join(str(t) for t in test)} (instead of the test split)")
        systems = ("bert",) * has_model + (("tfidf", "keyword") if baselines else ())
        reports = evaluate_all(splits, taxonomy, model if has_model else None, systems)
    except (InputError, ValueError) as err:
        _fail(str(err))
    console.print(markdown_table(reports, taxonomy.ids))
    # a score on other data must not overwrite the model's own evaluation files
    default_out = Path("out") / "evaluation-test-files" if test else (model if has_model else Path("out"))
    json_path, md_path = write_reports(reports, taxonomy, out or default_out)
    console.print(f"wrote {json_path} and {md_path}")


_mount_subcommands()

if __name__ == "__main__":
    app()
