"""What every command module shares: the console and the one way to fail."""

from __future__ import annotations

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print `error: message` on stderr and exit with `code` (2: bad input)."""
    err_console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)
