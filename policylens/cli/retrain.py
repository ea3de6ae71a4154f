"""`policylens add | suggest | retrain | models ...`: growing the data and the model (wired in with `register(app)`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from policylens.paths import REGISTRY_DIR as DEFAULT_REGISTRY_DIR
from policylens.taxonomy import DEFAULT_TAXONOMY_PATH
from training.store import DEFAULT_STORE_DIR
from training.tagger.config import TaggerConfig  # option defaults: one source

_STORE = typer.Option(DEFAULT_STORE_DIR, "--store", help="Label store folder (log.jsonl + manifest.json).")
_TAXONOMY = typer.Option(DEFAULT_TAXONOMY_PATH, "--taxonomy", help="Taxonomy JSON file.")
_REGISTRY = typer.Option(DEFAULT_REGISTRY_DIR, "--registry", help="Model registry folder.")
_SILVER = typer.Option(True, "--silver/--no-silver", help="Read ../shared/data/train_silver.jsonl as a base source when present.")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _store(store: Path, taxonomy: Path, silver: bool, base: Optional[list[Path]] = None):
    from policylens.dataset import default_sources
    from training.store import LabelStore

    sources = list(base) if base else default_sources(include_silver=silver)
    return LabelStore(store, taxonomy_path=taxonomy, base_sources=sources)


def add(
    files: list[Path] = typer.Argument(..., help="JSON Lines (paragraphs, documents, corrections) or CSV (id,text,labels) files, UTF-8. A folder stands for the .jsonl, .ndjson and .csv files directly inside it (sorted; subfolders are not read)."),
    new_label: Optional[str] = typer.Option(None, "--new-label", help="Add this domain id to the taxonomy first."),
    description: str = typer.Option("", "--description", help="What the new domain covers (and what it does not)."),
    name_zh: Optional[str] = typer.Option(None, "--name-zh", help="Chinese name of the new domain."),
    name_en: Optional[str] = typer.Option(None, "--name-en", help="English name of the new domain."),
    store: Path = _STORE,
    taxonomy: Path = _TAXONOMY,
    silver: bool = _SILVER,
    base: Optional[list[Path]] = typer.Option(None, "--base", help="Base labelled files instead of seeds (+ silver)."),
) -> None:
    """Validate labelled paragraphs and append them to the versioned label store."""
    from policylens.io import InputError
    from policylens.taxonomy import Label

    label = None
    try:
        if new_label is not None:
            if not name_zh or not name_en:
                _fail("--new-label needs --name-zh and --name-en")
            label = Label(id=new_label, name_zh=name_zh, name_en=name_en, description=description)
        report = _store(store, taxonomy, silver, base).add(files, new_label=label)
    except (InputError, ValueError) as err:
        _fail(str(err))
    for dup in report.duplicates:
        typer.echo(f"duplicate (skipped): {dup['where']} id {dup['id']} = existing {dup['existing_id']}", err=True)
    for conflict in report.conflicts:
        typer.echo(f"conflict (skipped): {conflict['where']} id {conflict['id']}: {conflict['reason']}; "
                   f"new {conflict['labels']} vs existing {conflict['existing_id']} {conflict['existing_labels']}", err=True)
    typer.echo(report.summary())


def suggest(
    inputs: Optional[list[str]] = typer.Argument(None, help="Corpus: JSON Lines of documents, files, folders or globs."),
    n: int = typer.Option(50, "--n", help="How many paragraphs to suggest."),
    like: Optional[Path] = typer.Option(None, "--like", help="Example paragraphs of a (new) domain, one per line or JSON "
                                        "Lines with \"text\": rank by similarity to them instead of uncertainty."),
    relabel: bool = typer.Option(False, "--relabel", help="With --like: rank the store's labelled paragraphs instead "
                                 "of a corpus, written as correction rows (add the new label where it applies)."),
    skip_label: Optional[str] = typer.Option(None, "--skip-label", help="With --relabel: leave out paragraphs that "
                                             "already carry this label (a second round of corrections)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Tagger dir [default: the registry's current version]."),
    backbone: Optional[str] = typer.Option(None, help="Encoder for --like (default: converted multilingual-e5-small)."),
    out: Path = typer.Option(Path("to_label.jsonl"), "--out", "-o", help="JSON Lines to fill in."),
    weight: float = typer.Option(0.5, help="Uncertainty or similarity (1) vs diversity (0)."),
    max_docs: Optional[int] = typer.Option(None, "--max-docs", help="Read at most this many documents."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the model."),
    store: Path = _STORE,
    taxonomy: Path = _TAXONOMY,
    silver: bool = _SILVER,
    registry: Path = _REGISTRY,
) -> None:
    """Rank paragraphs worth labelling: uncertain ones (with diversity), or ones like a new domain's examples."""
    from policylens.io import InputError
    from training.registry import Registry
    from training.suggest import (
        SuggestConfig,
        rank,
        read_examples,
        relabel_candidates,
        write_suggestions,
    )
    from training.suggest import suggest as run_suggest

    if relabel == bool(inputs):
        _fail("give a corpus to rank, or --relabel (with --like) to rank the label store's own paragraphs")
    if relabel and like is None:
        _fail("--relabel needs --like: examples of the domain to look for among labelled paragraphs")
    try:
        config = SuggestConfig(n=n, weight=weight, max_docs=max_docs)
        examples = read_examples(like) if like else ()
        model_dir = model or Registry(registry).current_dir()
        if model_dir is None and not examples:
            typer.echo("no model given and no current registry version: ranking by diversity only", err=True)
        labelled = _store(store, taxonomy, silver).rows()
        if relabel:
            rows = rank(relabel_candidates(labelled, config, skip_label), model_dir, config, threads, examples, backbone)
        else:
            known = [row["text"] for row in labelled]
            rows = run_suggest(inputs, model_dir, known, config, threads, examples, backbone)
    except (InputError, ValueError) as err:
        _fail(str(err))
    write_suggestions(rows, out)
    todo = "add the new label to the rows it applies to" if relabel else "fill in `labels`"
    typer.echo(f"wrote {len(rows)} paragraphs to label to {out}; {todo}, then `policylens add {out}`")


def retrain(
    start: str = typer.Option("current", "--from", help="current (warm start, grows the head for new domains) | backbone."),
    mix_old: float = typer.Option(1.0, "--mix-old", help="Fraction of old training documents mixed back in."),
    promote: bool = typer.Option(True, "--promote/--no-promote", help="Promote automatically when the gate passes."),
    max_macro_drop: float = typer.Option(0.01, help="Gate: largest allowed macro-F1 drop over old domains (test)."),
    max_domain_drop: float = typer.Option(0.03, help="Gate: largest allowed F1 drop of any old domain (test)."),
    gate_rule: str = typer.Option("point", "--gate-rule", help="point: any drop over a margin refuses | significant: "
                                  "only if its 90% bootstrap interval is also below 0 (small test splits)."),
    backbone: Optional[str] = typer.Option(None, help="Backbone for --from backbone (default: converted multilingual-e5-small)."),
    epochs: int = typer.Option(TaggerConfig.epochs),
    batch_size: int = typer.Option(16),
    learning_rate: float = typer.Option(TaggerConfig.learning_rate),
    max_length: int = typer.Option(256),
    freeze_layers: int = typer.Option(8, help="Freeze (and cache) the lowest N transformer layers."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after N optimiser steps (smoke runs)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads (leave cores to a server)."),
    seed: int = typer.Option(13),
    store: Path = _STORE,
    taxonomy: Path = _TAXONOMY,
    silver: bool = _SILVER,
    base: Optional[list[Path]] = typer.Option(None, "--base", help="Base labelled files instead of seeds (+ silver)."),
    registry: Path = _REGISTRY,
) -> None:
    """Train a new registry version on the store's data, gate it against the current one, maybe promote it."""
    from policylens.dataset import SplitConfig
    from policylens.io import InputError
    from training.registry import GateConfig, Registry
    from training.retrain import RetrainConfig
    from training.retrain import retrain as run_retrain
    from training.tagger import TaggerConfig

    try:
        config = RetrainConfig(
            start=start, mix_old=mix_old, promote=promote, split=SplitConfig(seed=seed),
            gate=GateConfig(max_macro_drop=max_macro_drop, max_domain_drop=max_domain_drop, drop_rule=gate_rule),
            tagger=TaggerConfig(backbone=backbone, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                                max_length=max_length, freeze_layers=freeze_layers, max_steps=max_steps,
                                num_threads=threads, seed=seed),
        )
        result = run_retrain(_store(store, taxonomy, silver, base), Registry(registry), config)
    except (InputError, ValueError) as err:
        _fail(str(err))
    state = "promoted" if result.promoted else "registered, NOT promoted"
    typer.echo(f"{result.version}: {state}")
    for reason in result.decision.reasons:
        typer.echo(f"  - {reason}")
    for warning in result.decision.warnings:
        typer.echo(f"  warning: {warning}")
    typer.echo(f"report: {result.model_dir / 'report.md'}")


models = typer.Typer(help="The model registry: list, promote, roll back, verify.", no_args_is_help=True)


@models.command("list")
def list_versions(registry: Path = _REGISTRY) -> None:
    """Registered versions, their gate decisions, which one is current, and documents moved between splits."""
    from policylens.io import InputError
    from training.registry import Registry

    reg = Registry(registry)
    current = reg.current()
    if not reg.versions():
        typer.echo(f"no versions in {registry}")
    for name in reg.versions():
        try:
            info = reg.info(name)
        except InputError as err:
            typer.echo(f"{'*' if name == current else ' '} {name}  unreadable: {err}")
            continue
        test = info.get("metrics", {}).get("new", {}).get("test", {})
        gate = "gate passed" if info.get("gate", {}).get("promote") else "gate refused"
        mark = "*" if name == current else " "
        typer.echo(f"{mark} {name}  {info.get('created', '')}  data {info.get('data_version', '')}  "
                   f"test macro-F1 {test.get('macro_f1', float('nan')):.3f}  {gate}  labels {','.join(info.get('labels', []))}")
    moves = reg.split_moves()
    if moves:  # the yardstick changed: a later version's test split is not an earlier one's
        typer.echo("documents moved between splits:")
        for move in moves:
            typer.echo(f"  {move['at']}  {move['doc_id']}: {move['from']} -> {move['to']}  "
                       f"(while {move.get('current') or 'no version'} was current) {move['note']}")


@models.command("promote")
def promote(version: str = typer.Argument(..., help="Version to serve, e.g. v0003 (v0003/ or a path to it also works)."),
            registry: Path = _REGISTRY) -> None:
    """Point CURRENT at VERSION (atomically) once it passes the model checks (file hashes, loading,
    smoke-set scores); a gate-refused version can be promoted deliberately, a broken one cannot."""
    from policylens.io import InputError
    from training.registry import Registry

    try:
        name = Registry(registry).promote(version, note="manual")
    except InputError as err:
        _fail(str(err))
    typer.echo(f"CURRENT -> {name}")


@models.command("rollback")
def rollback(registry: Path = _REGISTRY) -> None:
    """Point CURRENT back at the previously promoted version."""
    from policylens.io import InputError
    from training.registry import Registry

    try:
        target = Registry(registry).rollback()
    except InputError as err:
        _fail(str(err))
    typer.echo(f"CURRENT -> {target}")


@models.command("move-doc")
def move_doc(doc_id: str = typer.Argument(..., help="The document's id (as in the store and the desk)."),
             to: str = typer.Option(..., "--to", help="train | dev | test"),
             note: str = typer.Option(..., "--note", help="Why: the next gate report shows it."),
             registry: Path = _REGISTRY) -> None:
    """Move a document to another split from the next retraining on, e.g. out of the fixed test split so that its
    corrections train the model. The next gate report says the test split changed."""
    from policylens.io import InputError
    from training.registry import Registry

    try:
        move = Registry(registry).move_document(doc_id, to, note)
    except InputError as err:
        _fail(str(err))
    typer.echo(f"{move['doc_id']}: {move['from']} -> {move['to']} from the next retraining on")


@models.command("verify")
def verify(registry: Path = _REGISTRY, clean: bool = typer.Option(False, "--clean", help="Remove dead leftovers."),
           quick: bool = typer.Option(False, "--quick", help="Skip the per-version model checks (hashes, loading, "
                                      "smoke-set scores): only leftovers, missing files and CURRENT.")) -> None:
    """Check the registry: leftovers of killed trainings, a dangling CURRENT, and every version's files
    against their recorded sha256, loading and smoke-set scores."""
    from training.registry import Registry

    report = Registry(registry).verify(clean=clean, deep=not quick)
    for path in report.leftovers:
        typer.echo(f"leftover{' (removed)' if clean else ''}: {path}")
    for path in report.in_progress:
        typer.echo(f"in progress: {path}")
    for note in report.notes:
        typer.echo(f"note: {note}")
    for problem in report.broken:
        typer.echo(f"broken: {problem}")
    if not report.ok:
        raise typer.Exit(1)
    typer.echo("registry ok")


def register(app: typer.Typer) -> None:
    """Add `add`, `suggest`, `retrain` and the `models` sub-app to the policylens CLI."""
    app.command("add")(add)
    app.command("suggest")(suggest)
    app.command("retrain")(retrain)
    app.add_typer(models, name="models")

