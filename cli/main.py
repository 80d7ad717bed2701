"""The `fieldgate` app: registers every command group; `run` is the console script.

Errors are translated here, once: a FieldgateError prints its message and hint and exits 1.
"""

from __future__ import annotations

import sys

import typer

from cli import certs, couriers, db, orders, schemas, serve, stats, users
from cli.common import errors
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
app.command("sessions")(db.sessions_cmd)
app.add_typer(db.app, name="db")
app.add_typer(users.app, name="users")
app.add_typer(certs.app, name="certs")


def run(argv: list[str] | None = None) -> int:
    """Run a command; print a FieldgateError as `error: … / hint: …`. Returns the exit code."""
    try:
        app(args=argv, prog_name="fieldgate")
    except FieldgateError as exc:
        errors.print(f"[red]error:[/] {exc.message}")
        if exc.hint:
            errors.print(f"[dim]hint:[/] {exc.hint}")
        return 1
    except SystemExit as exc:  # typer's own exit: help, usage errors, typer.Exit
        return exc.code if isinstance(exc.code, int) else 0
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
