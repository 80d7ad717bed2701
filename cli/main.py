"""The `fieldgate` app: registers every command group; `run` is the console script.

Errors are translated here, once: a FieldgateError prints its message and hint and exits 1.
"""

from __future__ import annotations

import sys

import click
import typer

from cli import couriers, orders, schemas, serve, stats
from cli.common import console
from gateway.errors import FieldgateError

app = typer.Typer(
    name="fieldgate",
    help="fieldgate: an MQTT gateway for orders, courier tasks, status and GPS.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command("serve")(serve.serve_cmd)
app.command("bridge")(serve.bridge_cmd)
app.add_typer(orders.app, name="orders")
app.command("track")(orders.track_cmd)
app.add_typer(couriers.app, name="couriers")
app.command("stats")(stats.stats_cmd)
app.add_typer(schemas.app, name="schemas")


def run(argv: list[str] | None = None) -> int:
    """Entry point: run a command, print FieldgateErrors as `error: … / hint: …`, return the exit code."""
    try:
        app(args=argv, prog_name="fieldgate", standalone_mode=False)
    except FieldgateError as exc:
        console.print(f"[red]error:[/] {exc.message}")
        if exc.hint:
            console.print(f"[dim]hint:[/] {exc.hint}")
        return 1
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        return 130
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
