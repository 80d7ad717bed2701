"""fieldgate orders list / show / purge / assign / packed / cancel, and fieldgate track."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

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
    gateway_pid,
    progress,
    read_store,
    settings,
    show_rows,
    when,
    write_store,
)
from gateway.core.lifecycle import FINAL, OrderRecord
from gateway.core.models import ShopCommand, Status
from gateway.errors import FieldgateError, StoreError
from gateway.store.queries import Queries
from gateway.store.tables import purge

app = typer.Typer(help="Look at orders, and act on them as an operator.", no_args_is_help=True)

#: How long an operator command waits for the running gateway to apply it.
COMMAND_TIMEOUT = 15.0


def _status_text(status: str) -> str:
    style = {"delivered": "green", "failed": "red", "cancelled": "dim", "exception": "yellow"}.get(status, "cyan")
    return f"[{style}]{status}[/]"


def _items(order: dict[str, Any]) -> str:
    return ", ".join(f"{i['qty']}x {i['name']}" for i in order["items"])


def _order(store: Queries, order_id: str) -> OrderRecord:
    record = store.get_order(order_id)
    if record is None:
        raise StoreError(f"no order {order_id!r} in {store.where}", hint="List orders with `fieldgate orders list`.")
    return record


@app.command("list")
def list_cmd(
    status: Annotated[Status | None, typer.Option(help="only orders in this status")] = None,
    shop: Annotated[str | None, typer.Option(help="only this shop's orders")] = None,
    courier: Annotated[str | None, typer.Option(help="only orders of this courier")] = None,
    limit: Annotated[int, typer.Option(min=1, help="most rows to show, newest first")] = 50,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """List orders, most recently changed first.

    Example:

        fieldgate orders list --status en_route --shop rose
    """
    store = read_store(settings(config, data_dir, verbose))
    rows, total = store.list_orders(status=status.value if status else None, shop_id=shop, courier_id=courier,
                                    limit=limit)
    for row in rows:
        order = json.loads(row.pop("order_json"))
        row.update(recipient=order["recipient"]["name"], items=_items(order))
    show_rows(rows, [
        Column("order", lambda r: r["order_id"]),
        Column("shop", lambda r: r["shop_id"]),
        Column("courier", lambda r: r["courier_id"] or "-"),
        Column("status", lambda r: _status_text(r["status"])),
        Column("recipient", lambda r: r["recipient"], wide_only=True),
        Column("items", lambda r: r["items"], wide_only=True),
        Column("created", lambda r: when(r["created_at"]), wide_only=True),
        Column("changed", lambda r: ago(r["updated_at"])),
    ], title="orders", empty="no orders match", as_json=as_json, wide=wide,
        note=f"showing {len(rows)} of {total}; --limit shows more" if total > len(rows) else None)


@app.command("show")
def show_cmd(
    order_id: Annotated[str, typer.Argument(help="the order's order_id")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Show one order and its timeline: every event, rejection and receipt, oldest first.

    Example:

        fieldgate orders show A1001
    """
    store = read_store(settings(config, data_dir, verbose))
    record = _order(store, order_id)
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
    timeline = store.timeline(order_id)
    for notice in store.notices_of(order_id):  # the customer's notices, in time order with the events
        state = ("sent" if notice["sent_at"] else "dropped (obsolete)" if notice["dropped_at"]
                 else f"waiting for {when(notice['deferred_until'])}")
        timeline.append({"at": notice["created_at"], "kind": f"notice {notice['kind']}", "status": "",
                         "actor": state, "courier_id": "", "reason": notice["text"], "media_id": None})
    timeline.sort(key=lambda e: e["at"])
    show_rows(timeline, [
        Column("at (UTC)", lambda e: when(e["at"])),
        Column("event", lambda e: e["kind"]),
        Column("status", lambda e: e["status"] or ""),
        Column("by", lambda e: e["actor"] or ""),
        Column("courier", lambda e: e["courier_id"] or ""),
        Column("reason", lambda e: " ".join(filter(None, (e["reason"], e["media_id"] and f"media {e['media_id']}")))),
    ], title="timeline", empty="no events")


@app.command("chat")
def chat_cmd(
    order_id: Annotated[str, typer.Argument(help="the order's order_id")],
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Print an order's conversation (shop, couriers, customer), with who has read how far.

    Example:

        fieldgate orders chat A1001
    """
    store = read_store(settings(config, data_dir, verbose))
    _order(store, order_id)
    messages, _ = store.chat_page(order_id, 0, 100_000)
    reads = store.chat_reads(order_id)
    rows = [m.model_dump(mode="json") for m in messages]
    for row in rows:
        row["read_by"] = [f"{r['role']} {r['reader_id']}" for r in reads if r["read_up_to"] >= row["seq"]]
    show_rows(rows, [
        Column("#", lambda r: str(r["seq"]), justify="right"),
        Column("at (UTC)", lambda r: when(r["at"])),
        Column("from", lambda r: f"{r['from']['role']} {r['from']['name'] or r['from']['id']}"),
        Column("message", lambda r: r["text"] or (f"media {r['media_id']}" if r["media_id"] else
                                                  f"location {r['lat']:.5f},{r['lon']:.5f}")),
        Column("read by", lambda r: ", ".join(r["read_by"]) or "-"),
    ], title=f"conversation of {order_id}", empty="no messages yet", as_json=as_json)


@app.command("purge")
def purge_cmd(
    before: Annotated[datetime, typer.Option(help="purge orders that ended before this date (YYYY-MM-DD, UTC)",
                                             formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"])],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Remove personal data older than a date: recipient, phone, address and notes of orders that ended
    before it (and of their tasks), their conversations, photos and voice notes, rating comments; raw payloads of
    dead letters and GPS fixes received before it.

    Order ids, statuses and timelines stay. The gateway also does this daily (storage.retention_days).

    Example:

        fieldgate orders purge --before 2026-05-01
    """
    s = settings(config, data_dir, verbose)
    with progress() as bar:
        task = bar.add_task("purge: orders scrubbed", total=None)
        counts = purge(write_store(s), s.data_dir, before.replace(tzinfo=UTC),
                       progress=lambda done, total: bar.update(task, completed=done, total=total))
        bar.update(task, total=counts["orders"], completed=counts["orders"])
    console.print(f"purged {counts['orders']} orders (with {counts['chat_messages']} chat messages and "
                  f"{counts['media']} uploads), {counts['dead_letters']} dead-letter payloads, "
                  f"{counts['gps_fixes']} GPS fixes, {counts['webhook_deliveries']} webhook deliveries")


def _operator_command(command: ShopCommand, config: ConfigOpt, data_dir: DataDirOpt, verbose: bool) -> None:
    """Hand a command to the running gateway (through the `commands` table), wait for its verdict, print it."""
    s = settings(config, data_dir, verbose)
    if gateway_pid(s) is None:
        raise FieldgateError(f"no gateway is running on data directory {s.data_dir}; nothing was changed",
                             hint="Start it with `fieldgate serve` (operator commands go through the running "
                             "gateway, like a shop's).")
    store = write_store(s)
    with store.transaction():
        command_id = store.submit_command(command.model_dump_json(exclude_none=True).encode(), datetime.now(UTC))
    deadline = time.monotonic() + COMMAND_TIMEOUT
    while (result := store.command(command_id)) is not None and result["state"] == "pending":
        if time.monotonic() > deadline:
            raise FieldgateError(f"the gateway did not take command {command_id} within {COMMAND_TIMEOUT:g} s",
                                 hint="It stays queued and runs when the gateway gets to it; check "
                                 f"`fieldgate orders show {command.order_id}` in a moment.")
        time.sleep(0.05)
    assert result is not None
    if result["state"] == "rejected":
        raise FieldgateError(f"refused: {result['reason']}", hint=result["hint"] or "")
    record = read_store(s).get_order(command.order_id)
    assert record is not None
    done = "no change: it already was" if result["state"] == "unchanged" else "now"
    console.print(f"order {command.order_id}: {done} {record.status.value}, courier {record.courier_id or '-'}")


OrderArg = Annotated[str, typer.Argument(help="the order's order_id")]
ReasonOpt = Annotated[str | None, typer.Option(help="why, for the timeline and the order system")]


@app.command("assign")
def assign_cmd(order_id: OrderArg, courier: Annotated[str, typer.Option(help="the courier to give it to")],
               reason: ReasonOpt = None, config: ConfigOpt = None, data_dir: DataDirOpt = None,
               verbose: VerboseOpt = False) -> None:
    """Assign (or reassign) an order to a courier, as its shop would (actor `operator`). Needs the gateway running.

    Example:

        fieldgate orders assign A1001 --courier c9
    """
    _operator_command(ShopCommand(command="assign", order_id=order_id, courier_id=courier, reason=reason),
                      config, data_dir, verbose)


@app.command("packed")
def packed_cmd(order_id: OrderArg, config: ConfigOpt = None, data_dir: DataDirOpt = None,
               verbose: VerboseOpt = False) -> None:
    """Mark an order packed (its courier gets ready_for_pickup), as its shop would. Needs the gateway running.

    Example:

        fieldgate orders packed A1001
    """
    _operator_command(ShopCommand(command="packed", order_id=order_id), config, data_dir, verbose)


@app.command("cancel")
def cancel_cmd(order_id: OrderArg, reason: ReasonOpt = None, config: ConfigOpt = None, data_dir: DataDirOpt = None,
               verbose: VerboseOpt = False) -> None:
    """Cancel an order (its courier gets a cancel task), as its shop would. Needs the gateway running.

    Example:

        fieldgate orders cancel A1001 --reason "customer called"
    """
    _operator_command(ShopCommand(command="cancel", order_id=order_id, reason=reason), config, data_dir, verbose)


def track_cmd(
    order_id: Annotated[str, typer.Argument(help="the order to follow")],
    timeout: Annotated[float, typer.Option(help="give up after this many seconds; 0 follows forever")] = 0,
    interval: Annotated[float, typer.Option(help="seconds between looks at the database")] = 0.5,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Follow one order live, printing each event, until it is delivered, failed or cancelled.

    Exits 0 when the order reaches a final status, 1 on timeout.

    Example:

        fieldgate track A1001 --timeout 3600
    """
    store = read_store(settings(config, data_dir, verbose))
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
