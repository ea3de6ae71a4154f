"""`policylens summarize`, `train-summarizer` and `evaluate-summaries`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from policylens.cli._util import console, err_console, fail
from policylens.paths import SUMMARIZER_DIR


def _render(summary, document, show_sections: bool) -> None:
    """Human-readable view: title, coverage, the sentences with their pointers, notes."""
    from rich.markup import escape

    head = f"[bold]{escape(summary.doc_id)}[/bold]"
    if summary.title:
        head += f"  {escape(summary.title)}"
    console.print(head)
    scope = f"domain {summary.domain}" if summary.domain else "whole document"
    console.print(f"[dim]{summary.method} · {scope} · {len(summary.sentences)} sentences, "
                  f"{len(summary.extract)} chars of {len(document.text)}[/dim]")
    if summary.domains:
        shares = ", ".join(f"{k} {v:.0%} ({summary.domain_paragraphs.get(k, 0)} ¶)" for k, v in summary.domains.items())
        console.print(f"domains: {shares}")
    if summary.abstract:
        console.print(f"[bold]abstract[/bold] ({escape(summary.generator or '')}): {escape(summary.abstract)}",
                      soft_wrap=True)
    if show_sections and summary.sections:
        for section in summary.sections:
            console.print(f"  [cyan]{escape(section.heading or '(preamble)')}[/cyan] [dim]{section.share:.0%}[/dim]")
            for s in section.sentences:
                console.print(f"    · {escape(s.text)}", soft_wrap=True)
    last_section = None
    for s in summary.sentences:
        if s.section and s.section != last_section and summary.sections:
            console.print(f"  [cyan]{escape(s.section)}[/cyan]")
            last_section = s.section
        console.print(f"  · {escape(s.text)} [dim]\\[{escape(s.paragraph_id)} {s.start}:{s.end}][/dim]", soft_wrap=True)
    for note in summary.notes:
        console.print(f"  [yellow]note:[/yellow] {escape(note)}")
    console.print()


def summarize_command(
    inputs: list[str] = typer.Argument(..., help="Files, folders, globs, JSON Lines corpora, or - for stdin."),
    domain: Optional[str] = typer.Option(None, "--domain", "-d", help="Summarise only what the document says about this domain (an id of the tagger's taxonomy, e.g. 5g, sme, carbon, supply_chain); needs --model. An unknown id exits 2 and lists the known ones."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Paragraph tagger dir: enables --domain and the domain coverage line."),
    method: str = typer.Option("auto", help="auto (trained scorer if models/summarizer exists, else textrank), trained, textrank, lead."),
    max_chars: Optional[int] = typer.Option(None, help="Length budget in characters (default: ~6% of the text, 120-500)."),
    max_sentences: Optional[int] = typer.Option(None, help="Length budget in sentences."),
    summarizer_dir: Optional[Path] = typer.Option(None, "--summarizer", help="Trained summarizer dir (default models/summarizer)."),
    generator: Optional[str] = typer.Option(None, "--generator", help="Seq2seq or causal LM (local dir or hub id) for an abstractive summary."),
    sections: bool = typer.Option(False, "--sections", help="Also print the per-section summaries of long documents."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per document (JSON Lines) on stdout."),
    text_field: str = typer.Option("text", help="Text field of JSON Lines inputs."),
) -> None:
    """Summarise documents: extracted sentences with paragraph ids and character offsets."""
    from transformers.utils import logging as hf_logging

    from inference.summarize import METHODS, Summarizer, check_domain, known_domains
    from policylens.ingest import IngestError, iter_inputs
    from policylens.io import InputError

    hf_logging.disable_progress_bar()  # "Loading weights" bars would interleave with --json output

    if method not in METHODS:
        err_console.print(f"[red]error:[/red] --method must be one of {', '.join(METHODS)}")
        raise typer.Exit(2)
    if domain is not None:
        try:  # before any model loads: the tagger's taxonomy (or the project's) says which domains exist
            check_domain(domain, known_domains(model))
        except (InputError, ValueError, OSError, KeyError) as err:
            from rich.markup import escape

            err_console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    if domain is not None and model is None:
        err_console.print("[red]error:[/red] --domain needs a paragraph tagger: pass --model TAGGER_DIR")
        raise typer.Exit(2)
    try:
        summarizer = Summarizer.load(summarizer_dir, tagger_dir=model)
    except (InputError, ValueError, OSError) as err:
        err_console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    loaded_generator = None
    if generator:
        from inference.abstractive import AbstractiveGenerator, GeneratorUnavailable

        try:
            loaded_generator = AbstractiveGenerator.load(generator)
        except GeneratorUnavailable as err:
            err_console.print(f"[yellow]warning:[/yellow] {err}; extractive summaries only")
    n_docs = n_errors = 0
    for item in iter_inputs(inputs, text_field=text_field):
        if isinstance(item, IngestError):
            n_errors += 1
            err_console.print(f"[yellow]skipped[/yellow] {item}")
            continue
        summary = summarizer.summarize(item, method=method, max_chars=max_chars, max_sentences=max_sentences,
                                       domain=domain, generator=loaded_generator)
        n_docs += 1
        if as_json:
            print(json.dumps(summary.to_dict(), ensure_ascii=False), flush=True)
        else:
            _render(summary, item, sections)
    if not as_json:
        console.print(f"{n_docs} documents summarised, {n_errors} skipped")
    if n_docs == 0:
        raise typer.Exit(1)


def train_command(
    out: Path = typer.Option(SUMMARIZER_DIR, "--out", "-o", help="Summariser model directory to write."),
    train_size: int = typer.Option(1600, help="News items to train on (sampled from the earlier dates)."),
    threads: int = typer.Option(1, help="torch threads for the scorer (it is tiny; extra threads only contend)."),
) -> None:
    """Train the summariser's sentence scorer on the shared news->headline pairs (embeddings are cached)."""
    import torch

    from policylens.io import InputError
    from training.summarizer.train import TrainConfig, train_summarizer

    torch.set_num_threads(threads)
    try:
        train_summarizer(out, train_size=train_size, config=TrainConfig(num_threads=threads), log=console.print)
    except (InputError, ValueError) as err:
        fail(str(err))


def evaluate_command(
    max_docs: int = typer.Option(500, help="Dev documents to score (evenly spread over the held-out dates)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the report as Markdown."),
    summarizer_dir: Path = typer.Option(SUMMARIZER_DIR, "--summarizer", help="Trained summariser dir."),
    threads: int = typer.Option(1, help="torch threads (the scorer is tiny; extra threads only contend)."),
) -> None:
    """Character ROUGE-1/2/L on the held-out (latest dates) news split: trained vs Lead-1/Lead-3/TextRank."""
    import torch

    from inference.summary_eval import evaluate_summaries
    from policylens.io import InputError
    from policylens.summarizer.model_dir import exists

    if not exists(summarizer_dir):
        fail(f"no trained summariser at {summarizer_dir}; run `policylens train-summarizer`")
    torch.set_num_threads(threads)
    try:
        report = evaluate_summaries(max_docs=max_docs, model_dir=summarizer_dir, log=console.print)
    except (InputError, ValueError) as err:
        fail(str(err))
    console.print(report.table())
    if out:
        from policylens.io import atomic_write

        with atomic_write(out) as handle:
            handle.write(report.markdown())
        console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    """Add the top-level `summarize` and `evaluate-summaries` commands to the policylens app."""
    app.command("summarize")(summarize_command)
    app.command("train-summarizer")(train_command)
    app.command("evaluate-summaries")(evaluate_command)
