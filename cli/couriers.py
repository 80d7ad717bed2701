"""fieldgate couriers list."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import typer

from cli.common import Column, ConfigOpt, DataDirOpt, JsonOpt, VerboseOpt, WideOpt, ago, read_store, settings, show_rows

app = typer.Typer(help="Look at couriers.", no_args_is_help=True)


def _online(row: dict[str, Any]) -> str:
    if not row["heard_from"]:
        return "[yellow]never[/]"
    return {1: "[green]yes[/]", 0: "[red]no[/]"}.get(row["online"], "[dim]?[/]")


@app.command("list")
def list_cmd(as_json: JsonOpt = False, wide: WideOpt = False, config: ConfigOpt = None, data_dir: DataDirOpt = None,
             verbose: VerboseOpt = False) -> None:
    """List couriers: online or not ("never" for couriers given tasks who never connected), devices online,
    last heard from, age of the last GPS fix, active orders, tasks without receipt.

    Example:

        fieldgate couriers list --data-dir ./data
    """
    rows = read_store(settings(config, data_dir, verbose)).couriers()
    for row in rows:
        fix = json.loads(row.pop("fix_json")) if row["fix_json"] else None
        row["fix"] = fix
        row["fix_at"] = datetime.fromtimestamp(fix["tst"], UTC).isoformat() if fix else None
        row["heard_from"] = bool(row["heard_from"])
        row["active_ids"] = row["active_ids"].split() if row["active_ids"] else []
    show_rows(rows, [
        Column("courier", lambda r: r["courier_id"]),
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
