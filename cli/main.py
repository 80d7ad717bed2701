"""The `fieldgate` app: registers every command group; `run` is the console script.

Errors are printed here, once: every exception is translated into the error tree
(`gateway.errors.translate`) and printed as its message and hint, exit code 1.
"""

from __future__ import annotations

import sys
import traceback

import typer
from rich.markup import escape

from cli import (
    certs,
    cluster,
    couriers,
    db,
    live,
    media,
    orders,
    schemas,
    serve,
    shops,
    simulate,
    stats,
    tokens,
    users,
    webhooks,
)
from cli.common import errors, used, where
from gateway.errors import translate

app = typer.Typer(
    name="fieldgate",
    help="fieldgate: an MQTT gateway for orders, courier tasks, status and GPS.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command("serve")(serve.serve_cmd)
app.command("bridge")(serve.bridge_cmd)
app.add_typer(cluster.app, name="cluster")
app.add_typer(orders.app, name="orders")
app.command("track")(orders.track_cmd)
app.add_typer(shops.app, name="shops")
app.add_typer(couriers.app, name="couriers")
app.command("stats")(stats.stats_cmd)
app.add_typer(schemas.app, name="schemas")
app.command("sessions")(db.sessions_cmd)
app.add_typer(db.app, name="db")
app.add_typer(media.app, name="media")
app.add_typer(users.app, name="users")
app.add_typer(tokens.app, name="tokens")
app.add_typer(webhooks.app, name="webhooks")
app.command("tail")(live.tail_cmd)
app.command("top")(live.top_cmd)
app.command("simulate")(simulate.simulate_cmd)
app.add_typer(certs.app, name="certs")


def run(argv: list[str] | None = None) -> int:
    """Run a command; print any error as `error: …` / `hint: …` (and the data directory it concerned).
    Returns the exit code: 0, 1 for errors, 2 for usage errors."""
    used.settings = None
    try:
        app(args=argv, prog_name="fieldgate")
    except SystemExit as exc:  # typer's own exit: help, usage errors, typer.Exit
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        error = translate(exc)
        if error is None:
            errors.print(f"[red]error:[/] internal error: {escape(f'{type(exc).__name__}: {exc}')}")
            errors.print("[dim]hint:[/] This is a fieldgate bug; please report it with the traceback below.")
            errors.print("".join(traceback.format_exception(exc)), markup=False)
            return 1
        errors.print(f"[red]error:[/] {escape(error.message)}")
        if error.hint:
            errors.print(f"[dim]hint:[/] {escape(error.hint)}")
        if (place := where()) is not None:
            errors.print(f"[dim]{escape(place)}[/]")
        return 1
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
