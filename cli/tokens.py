"""fieldgate tokens create / list / revoke: bearer tokens for the HTTP side."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from cli.common import (
    Column,
    ConfigOpt,
    DataDirOpt,
    JsonOpt,
    VerboseOpt,
    console,
    read_store,
    settings,
    show_rows,
    when,
    write_store,
)
from gateway.errors import InvalidInput

app = typer.Typer(help="Bearer tokens for the HTTP API (order systems, Prometheus, scripts).", no_args_is_help=True)

_UNITS = {"m": 60, "h": 3600, "d": 86400}


def _expiry(text: str | None) -> datetime | None:
    """'90d', '12h', '30m' or an ISO 8601 time → when the token stops working."""
    if text is None:
        return None
    if text[:-1].isdigit() and text[-1:] in _UNITS:
        return datetime.now(UTC) + timedelta(seconds=int(text[:-1]) * _UNITS[text[-1]])
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"--expires {text!r} is neither a duration nor a time",
                           hint="Give 90d, 12h, 30m, or an ISO 8601 time such as 2027-01-01T00:00:00+08:00.") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@app.command("create")
def create_cmd(
    user: Annotated[str, typer.Argument(help="the fieldgate user the token acts as (its role decides what it may)")],
    expires: Annotated[str | None, typer.Option(help="90d, 12h, 30m or an ISO 8601 time [default: never]")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Make a bearer token for USER and print it, once: only its hash is stored. Works at once, no restart.

    Example:

        fieldgate tokens create shopify-sync --expires 365d
    """
    at = _expiry(expires)
    store = write_store(settings(config, data_dir, verbose))
    with store.transaction():
        token, secret = store.tokens.create(user, at)
    console.print(f"token {token.token_id} for {user}" + (f", expires {when(token.expires_at)} UTC" if at else ""))
    console.print("Send it as: Authorization: Bearer <token>. It is shown this once:")
    print(secret)


@app.command("list")
def list_cmd(as_json: JsonOpt = False, config: ConfigOpt = None, data_dir: DataDirOpt = None,
             verbose: VerboseOpt = False) -> None:
    """List tokens: id, user, made, expires, revoked (never the tokens themselves).

    Example:

        fieldgate tokens list
    """
    rows = [t.__dict__ for t in read_store(settings(config, data_dir, verbose)).tokens.list()]
    show_rows(rows, [Column("id", lambda r: r["token_id"]), Column("user", lambda r: r["user"]),
                     Column("made", lambda r: when(r["created_at"])),
                     Column("expires", lambda r: when(r["expires_at"]) if r["expires_at"] else "never"),
                     Column("revoked", lambda r: when(r["revoked_at"]))],
              title="tokens", empty="no tokens yet: make one with `fieldgate tokens create USER`", as_json=as_json)


@app.command("revoke")
def revoke_cmd(token_id: Annotated[str, typer.Argument(help="the token's id (`fieldgate tokens list`)")],
               config: ConfigOpt = None, data_dir: DataDirOpt = None, verbose: VerboseOpt = False) -> None:
    """Revoke a token: its next request is refused (401).

    Example:

        fieldgate tokens revoke 3f9a0c12
    """
    store = write_store(settings(config, data_dir, verbose))
    with store.transaction():
        store.tokens.revoke(token_id)
    console.print(f"revoked {token_id}")
