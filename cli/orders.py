"""fieldgate orders list / show, and fieldgate track."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from cli.common import ConfigOpt, DataDirOpt, ago, console, open_store, settings, when
from gateway.errors import StoreError
from gateway.lifecycle import FINAL
from gateway.models import Status
from gateway.store import Store, db_path

app = typer.Typer(help="Look at orders.", no_args_is_help=True)


def _status_text(status: str) -> str:
    style = {"delivered": "green", "failed": "red", "cancelled": "dim", "exception": "yellow"}.get(status, "cyan")
    return f"[{style}]{status}[/]"


@app.command("list")
def list_cmd(
    status: Annotated[Status | None, typer.Option(help="only orders in this status")] = None,
    shop: Annotated[str | None, typer.Option(help="only this shop's orders")] = None,
    courier: Annotated[str | None, typer.Option(help="only orders of this courier")] = None,
    limit: Annotated[int, typer.Option(min=1, help="most rows to show, newest first")] = 50,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List orders, most recently changed first.

    Example:

        fieldgate orders list --status en_route --shop rose
    """
    store = open_store(config, data_dir)
    rows = store.list_orders(status=status.value if status else None, shop_id=shop, courier_id=courier,
                             limit=limit)
    table = Table("order", "shop", "courier", "status", "recipient", "items", "updated", title="orders")
    for row in rows:
        order = json.loads(row["order_json"])
        items = ", ".join(f"{i['qty']}x {i['name']}" for i in order["items"])
        table.add_row(row["order_id"], row["shop_id"], row["courier_id"] or "-", _status_text(row["status"]),
                      order["recipient"]["name"], items, ago(row["updated_at"]))
    console.print(table if rows else "no orders match")


@app.command("show")
def show_cmd(
    order_id: Annotated[str, typer.Argument(help="the order's order_id")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Show one order and its timeline: every event, rejection and receipt, oldest first.

    Example:

        fieldgate orders show A1001
    """
    store = open_store(config, data_dir)
    record = store.get_order(order_id)
    if record is None:
        raise StoreError(f"no order {order_id!r} in {store.path}", hint="List orders with `fieldgate orders list`.")
    o = record.order
    console.print(f"[bold]{o.order_id}[/]  shop {o.shop_id}  courier {record.courier_id or '-'}  "
                  f"{_status_text(record.status.value)}  priority {o.priority}")
    console.print(f"to {o.recipient.name}, {o.address.text}")
    if o.window:
        console.print(f"window {o.window.start.isoformat()} to {o.window.end.isoformat()}")
    console.print("items: " + ", ".join(f"{i.qty}x {i.name}" for i in o.items))
    if o.notes:
        console.print(f"notes: {o.notes}")
    if record.location:
        console.print(f"last fix {record.location.lat:.5f},{record.location.lon:.5f} (tst {record.location.tst})")
    table = Table("at (UTC)", "event", "status", "by", "courier", "reason", title="timeline")
    for e in store.timeline(order_id):
        table.add_row(when(e["at"]), e["kind"], e["status"] or "", e["actor"] or "", e["courier_id"] or "",
                      e["reason"] or "")
    console.print(table)


@app.command("purge")
def purge_cmd(
    before: Annotated[datetime, typer.Option(help="purge orders that ended before this date (YYYY-MM-DD, UTC)",
                                             formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"])],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Remove personal data older than a date: recipient, phone, address and notes of orders that ended
    before it (and of their tasks), raw payloads of dead letters and GPS fixes received before it.

    Order ids, statuses and timelines stay. The gateway also does this daily (storage.retention_days).

    Example:

        fieldgate orders purge --before 2026-05-01
    """
    store = Store(db_path(settings(config, data_dir).data_dir))
    with store.transaction():
        counts = store.purge_personal_data(before.replace(tzinfo=UTC))
    console.print(f"purged {counts['orders']} orders, {counts['dead_letters']} dead-letter payloads, "
                  f"{counts['gps_fixes']} GPS fixes")


def track_cmd(
    order_id: Annotated[str, typer.Argument(help="the order to follow")],
    timeout: Annotated[float, typer.Option(help="give up after this many seconds; 0 follows forever")] = 0,
    interval: Annotated[float, typer.Option(help="seconds between looks at the database")] = 0.5,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Follow one order live, printing each event, until it is delivered, failed or cancelled.

    Exits 0 when the order reaches a final status, 1 on timeout.

    Example:

        fieldgate track A1001 --timeout 3600
    """
    store = open_store(config, data_dir)
    deadline = time.monotonic() + timeout if timeout > 0 else None
    last = 0
    waiting = False
    while True:
        record = store.get_order(order_id)
        if record is None and not waiting:
            console.print(f"waiting for order {order_id} to arrive on orders/in …")
            waiting = True
        if record is not None:
            for e in store.events_since(order_id, last):
                last = e["id"]
                who = f" by {e['actor']}" if e["actor"] else ""
                why = f" ({e['reason']})" if e["reason"] else ""
                console.print(f"{when(e['at'])}  {e['kind']:<22} {_status_text(e['status'] or '')}{who}{why}")
            if record.status in FINAL:
                console.print(f"order {order_id} is {_status_text(record.status.value)}")
                return
        if deadline is not None and time.monotonic() >= deadline:
            console.print(f"gave up after {timeout:g} s; order {order_id} is "
                          f"{record.status.value if record else 'not known yet'}")
            raise typer.Exit(1)
        time.sleep(interval)
