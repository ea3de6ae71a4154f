"""The one `policylens` command: the only place where training and inference meet.

Each module here holds the commands of one step and a `register(app)` that
mounts them; each command is a thin wrapper over a library function.
"""

from __future__ import annotations

import typer

from policylens.cli import (
    backbone,
    documents,
    onnx,
    retrain,
    serve,
    summarize,
    tag,
    tagger,
)

app = typer.Typer(
    help="Tag, summarise and serve Chinese industrial-policy documents, offline.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
for module in (documents, backbone, tagger, summarize, tag, onnx, serve, retrain):
    module.register(app)

if __name__ == "__main__":
    app()
