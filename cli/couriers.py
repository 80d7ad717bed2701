"""fieldgate couriers list."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer
from rich.table import Table

from cli.common import ConfigOpt, DataDirOpt, ago, console, open_store

app = typer.Typer(help="Look at couriers.", no_args_is_help=True)


@app.command("list")
def list_cmd(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """List couriers: connected or not, last GPS fix, active orders, tasks without receipt.

    Example:

        fieldgate couriers list --data-dir ./data
    """
    store = open_store(config, data_dir)
    rows = store.couriers()
    table = Table("courier", "online", "last seen", "last fix (lat,lon)", "fix age", "active orders",
                  "tasks w/o receipt", title="couriers")
    for row in rows:
        online = {1: "[green]yes[/]", 0: "[red]no[/]"}.get(row["online"], "[dim]unknown[/]")
        fix = json.loads(row["fix_json"]) if row["fix_json"] else None
        where = f"{fix['lat']:.5f},{fix['lon']:.5f}" if fix else "-"
        fix_age = ago(datetime.fromtimestamp(fix["tst"], UTC).isoformat()) if fix else "-"
        active = f"{row['active_orders']}: {row['active_ids']}" if row["active_orders"] else "0"
        table.add_row(row["courier_id"], online, ago(row["last_seen_at"]), where, fix_age, active,
                      str(row["unreceived_tasks"]))
    console.print(table if rows else "no couriers yet")
