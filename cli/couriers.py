"""fieldgate couriers add / set / remove / list."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from cli.common import (
    Column,
    ConfigOpt,
    DataDirOpt,
    InitOpt,
    JsonOpt,
    VerboseOpt,
    WideOpt,
    ago,
    console,
    read_store,
    settings,
    show_rows,
    validated,
    write_store,
)
from gateway.core.models import Courier
from gateway.errors import StoreError
from gateway.store.tables import Store

app = typer.Typer(help="Couriers: who rides for which shop, and where they are.", no_args_is_help=True)

CourierArg = Annotated[str, typer.Argument(help="the courier's id, as in couriers/{courier_id}/… topics")]
ShopsOpt = Annotated[list[str] | None, typer.Option("--shop", help="a shop it rides for (repeat for several)")]
MaxActiveOpt = Annotated[int | None, typer.Option(help="most active orders at once "
                                                  "[default: assignment.default_max_active, 3]")]
PhoneOpt = Annotated[str | None, typer.Option(help="its phone number; shown to its shops only")]


@app.command("add")
def add_cmd(courier_id: CourierArg, name: Annotated[str, typer.Option(help="its name, as people read it")],
            shop: ShopsOpt = None, max_active: MaxActiveOpt = None, phone: PhoneOpt = None, init: InitOpt = False,
            config: ConfigOpt = None, data_dir: DataDirOpt = None, verbose: VerboseOpt = False) -> None:
    """Register a courier for one or more shops. Applies at once, without a restart; its login is a user
    (`fieldgate users add NAME --role courier --id COURIER_ID`).

    Example:

        fieldgate couriers add c7 --name "Zhang Wei" --shop rose --max-active 3 --phone +8613911112222
    """
    store = write_store(settings(config, data_dir, verbose), init=init)
    if store.get_courier(courier_id) is not None:
        raise StoreError(f"courier {courier_id!r} is registered already",
                         hint="Change it with `fieldgate couriers set`.")
    courier = _registrable(store, validated(Courier, courier_id=courier_id, name=name, shops=shop or [],
                                           max_active=max_active, phone=phone))
    with store.transaction():
        store.put_courier(courier)
    console.print(f"registered courier {courier.courier_id} ({courier.name}) for {', '.join(courier.shops)}")


@app.command("set")
def set_cmd(courier_id: CourierArg, name: Annotated[str | None, typer.Option(help="its name")] = None,
            shop: ShopsOpt = None, max_active: MaxActiveOpt = None, phone: PhoneOpt = None,
            config: ConfigOpt = None, data_dir: DataDirOpt = None, verbose: VerboseOpt = False) -> None:
    """Change a registered courier; what is not given stays (--shop replaces its list of shops; --phone ''
    removes the number). Applies at once.

    Example:

        fieldgate couriers set c7 --shop rose --shop tulip --max-active 4
    """
    store = write_store(settings(config, data_dir, verbose))
    current = store.get_courier(courier_id)
    if current is None:
        raise StoreError(f"no courier {courier_id!r} is registered", hint="Register it with `fieldgate couriers add`.")
    changes: dict[str, Any] = {"name": name, "shops": shop or None, "max_active": max_active}
    values = {**current.model_dump(), **{k: v for k, v in changes.items() if v is not None}}
    if phone is not None:
        values["phone"] = phone or None
    with store.transaction():
        store.put_courier(_registrable(store, validated(Courier, **values)))
    console.print(f"updated courier {courier_id}")


@app.command("remove")
def remove_cmd(courier_id: CourierArg, config: ConfigOpt = None, data_dir: DataDirOpt = None,
               verbose: VerboseOpt = False) -> None:
    """Unregister a courier: no new orders find it. Its history, orders and presence stay; its user (login) too.

    Example:

        fieldgate couriers remove c7
    """
    store = write_store(settings(config, data_dir, verbose))
    with store.transaction():
        removed = store.unregister_courier(courier_id)
    if not removed:
        raise StoreError(f"no courier {courier_id!r} is registered", hint="List them with `fieldgate couriers list`.")
    console.print(f"unregistered courier {courier_id}")


def _registrable(store: Store, courier: Courier) -> Courier:
    """A courier rides for registered shops only (a typo would otherwise never get an order)."""
    unknown = [s for s in courier.shops if store.get_shop(s) is None]
    if unknown:
        raise StoreError(f"shop {', '.join(unknown)} is not registered",
                         hint="Register it first with `fieldgate shops add`, or check the spelling "
                         "(`fieldgate shops list`).")
    return courier


def _online(row: dict[str, Any]) -> str:
    if not row["heard_from"]:
        return "[yellow]never[/]"
    return {1: "[green]yes[/]", 0: "[red]no[/]"}.get(row["online"], "[dim]?[/]")


@app.command("list")
def list_cmd(as_json: JsonOpt = False, wide: WideOpt = False, config: ConfigOpt = None, data_dir: DataDirOpt = None,
             verbose: VerboseOpt = False) -> None:
    """List couriers: name, online or not ("never" for couriers given tasks who never connected), devices online,
    last heard from, age of the last GPS fix, active orders, tasks without receipt.

    Example:

        fieldgate couriers list --data-dir ./data
    """
    rows = read_store(settings(config, data_dir, verbose)).couriers()
    for row in rows:
        raw = row.pop("fix_json")
        fix = json.loads(raw) if raw else None
        row["fix"] = fix
        row["fix_at"] = datetime.fromtimestamp(fix["tst"], UTC).isoformat() if fix else None
        row["heard_from"] = bool(row["heard_from"])
        row["registered"] = bool(row["registered"])
        row["active_ids"] = row["active_ids"].split() if row["active_ids"] else []
        row["shops"] = row["shops"].split() if row["shops"] else []
    show_rows(rows, [
        Column("courier", lambda r: r["courier_id"]),
        Column("name", lambda r: r["name"] or "-"),
        Column("shops", lambda r: " ".join(r["shops"]) or "-", wide_only=True),
        Column("online", _online),
        Column("devices", lambda r: str(r["devices_online"]), justify="right"),
        Column("device list", lambda r: r["devices"] or "-", wide_only=True),
        Column("seen", lambda r: ago(r["last_seen_at"])),
        Column("fix", lambda r: ago(r["fix_at"])),
        Column("lat,lon", lambda r: f"{r['fix']['lat']:.5f},{r['fix']['lon']:.5f}" if r["fix"] else "-",
               wide_only=True),
        Column("active", lambda r: str(r["active_orders"]), justify="right"),
        Column("orders", lambda r: " ".join(r["active_ids"]) or "-", wide_only=True),
        Column("unread", lambda r: str(r["unreceived_tasks"]), justify="right"),
    ], title="couriers", empty="no couriers yet", as_json=as_json, wide=wide)
