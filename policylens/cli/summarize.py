"""`policylens summarize`, `train-summarizer` and `evaluate-summaries`."""

from __future__ import annotations

import json
import os
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
    domain: Optional[str] = typer.Option(None, "--domain", "-d", help="Summarise only what the document says about this domain (an id of the taxonomy, e.g. 5g, sme, carbon, supply_chain); 'not addressed' when the document does not speak about it. An unknown id exits 2 and lists the known ones."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Paragraph tagger dir: adds the domain coverage line (and its taxonomy for --domain)."),
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


def sentence_encoder(layers: int = 6, num_threads: int | None = None, log=console.print):
    """The summariser's int8 ONNX sentence encoder, exported first when missing or stale."""
    from inference.sentence_onnx import SentenceExportConfig, ensure_sentence_encoder
    from policylens.summarizer.encoder import OnnxSentenceEncoder, encoder_dir

    directory = ensure_sentence_encoder(encoder_dir(layers), config=SentenceExportConfig(layers=layers), log=log)
    return OnnxSentenceEncoder(directory, num_threads=num_threads)


def policy_cross_validation(folds: int = 5, *, encoder=None, scorer_config=None, train_config=None,
                            select_config=None, train_size: int = 1600, log=console.print):
    """Cross-validate the summariser on the policy documents (inference.summary_eval.evaluate_policy),
    each fold's scorer trained by training.summarizer.train.make_fold_trainer: the one place
    where training and evaluation meet."""
    from inference.summary_eval import evaluate_policy
    from policylens.summarizer.model_dir import ScorerConfig
    from policylens.summarizer.policy import load_policy_items
    from policylens.taxonomy import Taxonomy
    from training.summarizer.train import (
        build_news_data,
        build_policy_examples,
        make_fold_trainer,
    )

    taxonomy = Taxonomy.load()
    encoder = encoder or sentence_encoder(num_threads=min(4, os.cpu_count() or 1), log=log)
    scorer_config = scorer_config or ScorerConfig(embedding_dim=encoder.dim)
    items = load_policy_items(labels=taxonomy.ids)
    news = build_news_data(encoder, train_size=train_size, max_sentences=scorer_config.max_sentences,
                           config=train_config, log=log)
    log("policy examples:")
    examples = build_policy_examples(items, encoder, log=log)
    train_fold = make_fold_trainer(news, examples, encoder, taxonomy, scorer_config=scorer_config,
                                   config=train_config, log=log)
    return evaluate_policy(items, train_fold=train_fold, encoder=encoder, k=folds, config=select_config, log=log)


def train_command(
    out: Path = typer.Option(SUMMARIZER_DIR, "--out", "-o", help="Summariser model directory to write."),
    train_size: int = typer.Option(1600, help="News items to train on (sampled from the earlier dates)."),
    policy: bool = typer.Option(True, "--policy/--no-policy", help="Also train on the policy documents with written summaries (and the domain heads)."),
    layers: int = typer.Option(6, help="Lower e5 layers kept in the int8 ONNX sentence encoder (exported once)."),
    threads: int = typer.Option(1, help="torch threads for the scorer (it is tiny; extra threads only contend)."),
) -> None:
    """Train the summariser's sentence scorer on the shared news->headline pairs and the policy documents
    with written summaries (sentence embeddings from the int8 ONNX encoder, cached on disk)."""
    import torch

    from policylens.io import InputError
    from training.summarizer.train import TrainConfig, train_summarizer

    torch.set_num_threads(threads)
    try:
        encoder = sentence_encoder(layers, num_threads=min(4, os.cpu_count() or 1))
        train_summarizer(out, train_size=train_size, config=TrainConfig(num_threads=threads), encoder=encoder,
                         policy_items=None if policy else [], log=console.print)
    except (InputError, ValueError) as err:
        fail(str(err))


def evaluate_command(
    max_docs: int = typer.Option(500, help="News dev documents to score (evenly spread over the held-out dates)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the report as Markdown."),
    summarizer_dir: Path = typer.Option(SUMMARIZER_DIR, "--summarizer", help="Trained summariser dir (the news evaluation)."),
    news: bool = typer.Option(True, "--news/--no-news", help="Score the trained summariser on held-out news."),
    policy: bool = typer.Option(True, "--policy/--no-policy", help="Cross-validate on the policy documents (trains one scorer per fold)."),
    folds: int = typer.Option(5, help="Cross-validation folds over the policy documents (grouped by document)."),
    threads: int = typer.Option(1, help="torch threads (the scorer is tiny; extra threads only contend)."),
) -> None:
    """Character ROUGE on held-out news (trained vs Lead-1/Lead-3/TextRank) and, cross-validated, on the
    policy documents with written summaries (trained vs Lead-250/TextRank/oracle, whole and per domain)."""
    import torch

    from inference.summary_eval import evaluate_summaries
    from policylens.io import InputError
    from policylens.summarizer.model_dir import exists

    if news and not exists(summarizer_dir):
        fail(f"no trained summariser at {summarizer_dir}; run `policylens train-summarizer`")
    torch.set_num_threads(threads)
    parts = []
    try:
        if news:
            report = evaluate_summaries(max_docs=max_docs, model_dir=summarizer_dir, log=console.print)
            console.print(report.table())
            parts.append(report.markdown())
        if policy:
            policy_report = policy_cross_validation(folds)
            console.print(policy_report.table())
            parts.append(policy_report.markdown())
    except (InputError, ValueError) as err:
        fail(str(err))
    if out and parts:
        from policylens.io import atomic_write

        with atomic_write(out) as handle:
            handle.write("\n".join(parts))
        console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    """Add the top-level `summarize` and `evaluate-summaries` commands to the policylens app."""
    app.command("summarize")(summarize_command)
    app.command("train-summarizer")(train_command)
    app.command("evaluate-summaries")(evaluate_command)
