"""fieldgate schemas export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import console
from gateway import schemas

app = typer.Typer(help="JSON Schema of every payload, and the HTTP side's OpenAPI document.", no_args_is_help=True)


@app.command("export")
def export_cmd(
    directory: Annotated[Path, typer.Option("--dir", help="where to write the .json files", file_okay=False)] = Path(
        "schemas"
    ),
) -> None:
    """Write one JSON Schema file per message of the topic contract, and openapi.json (the HTTP API).

    Example:

        fieldgate schemas export --dir schemas
    """
    for path in schemas.export(directory):
        console.print(f"wrote {path}")
