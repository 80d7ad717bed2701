"""fieldgate webhooks add / list / remove / enable / deliveries / retry."""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlsplit

import typer

from cli.common import (
    Column,
    ConfigOpt,
    DataDirOpt,
    JsonOpt,
    VerboseOpt,
    WideOpt,
    ago,
    console,
    read_store,
    settings,
    show_rows,
    write_store,
)
from gateway.config import Settings
from gateway.core.webhooks import Event
from gateway.errors import InvalidInput
from gateway.store.tables import Store

app = typer.Typer(help="Signed webhooks to order systems: endpoints, deliveries, retries.", no_args_is_help=True)


def _url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{url!r} is not an http:// or https:// URL", hint="Give the receiver's full URL.")
    return url


def _events(text: str) -> list[str]:
    names = [e.strip() for e in text.split(",") if e.strip()]
    unknown = [n for n in names if n not in Event.__members__]
    if unknown or not names:
        raise InvalidInput(f"unknown event {', '.join(unknown) or '(none)'}",
                           hint=f"Name one or more of {', '.join(Event)}, comma-separated.")
    return list(dict.fromkeys(names))


def _secret(secret: str | None) -> str:
    if secret is None:
        return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        key = b""
    if not secret.startswith("whsec_") or len(key) < 16:
        raise InvalidInput("--secret must be whsec_ followed by base64 of at least 16 bytes",
                           hint="Leave it out and fieldgate makes one.")
    return secret


@app.command("add")
def add_cmd(
    url: Annotated[str, typer.Argument(help="where to POST the events")],
    events: Annotated[str, typer.Option(help=f"comma-separated: {', '.join(Event)}")] = "ack",
    secret: Annotated[str | None, typer.Option(help="signing secret, whsec_<base64> [default: a new one]")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Send events to URL, signed the Standard Webhooks way; from the next event on (no restart).

    Example:

        fieldgate webhooks add https://shop.example/fieldgate --events ack,order_event
    """
    url, names, key = _url(url), _events(events), _secret(secret)
    store = write_store(settings(config, data_dir, verbose))
    with store.transaction():
        endpoint_id = store.add_webhook(url, names, key, datetime.now(UTC))
    console.print(f"added {endpoint_id}: {', '.join(names)} → {url}")
    if secret is None:
        console.print("Its signing secret (give it to the receiver; `webhooks list --json` shows it again):")
        print(key)


def _change(config: Settings, endpoint_id: str, change: Callable[[Store], bool], done: str) -> None:
    """Make one change to an endpoint in a transaction; an unknown endpoint is an error."""
    store = write_store(config)
    with store.transaction():
        if not change(store):
            raise InvalidInput(f"no webhook endpoint {endpoint_id!r}", hint="See `fieldgate webhooks list`.")
    console.print(f"{done} {endpoint_id}")


@app.command("list")
def list_cmd(as_json: JsonOpt = False, config: ConfigOpt = None, data_dir: DataDirOpt = None,
             verbose: VerboseOpt = False) -> None:
    """List endpoints with their events, state and backlog (--json includes the secrets).

    Example:

        fieldgate webhooks list
    """
    rows = read_store(settings(config, data_dir, verbose)).webhooks()
    show_rows(rows, [Column("id", lambda r: r["endpoint_id"]), Column("url", lambda r: r["url"]),
                     Column("events", lambda r: ",".join(r["events"])),
                     Column("state", lambda r: "on" if r["enabled"] else f"off: {r['disabled_reason'] or ''}"),
                     Column("pending", lambda r: str(r["pending"]), justify="right"),
                     Column("failed", lambda r: str(r["failed"]), justify="right")],
              title="webhook endpoints", as_json=as_json,
              empty="no webhook endpoints: add one with `fieldgate webhooks add URL`")


@app.command("remove")
def remove_cmd(endpoint_id: Annotated[str, typer.Argument(help="the endpoint (`fieldgate webhooks list`)")],
               config: ConfigOpt = None, data_dir: DataDirOpt = None, verbose: VerboseOpt = False) -> None:
    """Remove an endpoint and its deliveries (sent or not).

    Example:

        fieldgate webhooks remove ep_3f9a0c12ab
    """
    _change(settings(config, data_dir, verbose), endpoint_id, lambda store: store.remove_webhook(endpoint_id),
            "removed")


@app.command("enable")
def enable_cmd(endpoint_id: Annotated[str, typer.Argument(help="the endpoint (`fieldgate webhooks list`)")],
               config: ConfigOpt = None, data_dir: DataDirOpt = None, verbose: VerboseOpt = False) -> None:
    """Enable an endpoint again after its receiver answered 410 Gone; what waited is sent, in order.

    Example:

        fieldgate webhooks enable ep_3f9a0c12ab
    """
    _change(settings(config, data_dir, verbose), endpoint_id,
            lambda store: store.set_webhook_enabled(endpoint_id, True), "enabled")


@app.command("deliveries")
def deliveries_cmd(
    failed: Annotated[bool, typer.Option("--failed", help="only failed and given-up ones")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="most rows")] = 50,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """The newest deliveries: state, attempts, last answer.

    Example:

        fieldgate webhooks deliveries --failed
    """
    rows = read_store(settings(config, data_dir, verbose)).deliveries(failed_only=failed, limit=limit)
    show_rows(rows, [Column("id", lambda r: str(r["id"]), justify="right"), Column("event", lambda r: r["event"]),
                     Column("order", lambda r: r["order_id"] or "-"), Column("state", lambda r: r["state"]),
                     Column("tries", lambda r: str(r["attempts"]), justify="right"),
                     Column("last", lambda r: str(r["last_status"] or r["last_error"] or "-")),
                     Column("made", lambda r: ago(r["created_at"])),
                     Column("endpoint", lambda r: r["endpoint_id"], wide_only=True),
                     Column("webhook-id", lambda r: r["webhook_id"], wide_only=True)],
              title="webhook deliveries", as_json=as_json, wide=wide,
              empty="no failed deliveries" if failed else "no deliveries yet")


@app.command("retry")
def retry_cmd(delivery_id: Annotated[int, typer.Argument(help="the delivery (`fieldgate webhooks deliveries`)")],
              config: ConfigOpt = None, data_dir: DataDirOpt = None, verbose: VerboseOpt = False) -> None:
    """Send a failed or given-up delivery again, now, with the same webhook-id.

    Example:

        fieldgate webhooks retry 42
    """
    store = write_store(settings(config, data_dir, verbose))
    with store.transaction():
        if not store.retry_delivery(delivery_id, datetime.now(UTC)):
            raise InvalidInput(f"no failed or given-up delivery {delivery_id}",
                               hint="See `fieldgate webhooks deliveries --failed`.")
    console.print(f"delivery {delivery_id} will be sent again")
