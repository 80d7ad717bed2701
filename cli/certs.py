"""fieldgate certs dev."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import console

app = typer.Typer(help="Certificates for the TLS listener.", no_args_is_help=True)


@app.command("dev")
def dev_cmd(
    directory: Annotated[Path, typer.Option("--dir", help="where to write cert.pem and key.pem", file_okay=False)]
    = Path("certs"),
    days: Annotated[int, typer.Option(min=1, help="validity in days")] = 365,
) -> None:
    """Make a self-signed certificate and key for localhost, to try the TLS listener. Not for production.

    Then set tls.enabled, tls.certfile and tls.keyfile in broker.yaml; clients trust cert.pem as their CA.

    Example:

        fieldgate certs dev --dir certs
    """
    from gateway.certs import make_dev_pair  # cryptography, loaded only here

    cert, key = make_dev_pair(directory, days=days)
    console.print(f"wrote {cert} and {key}")
