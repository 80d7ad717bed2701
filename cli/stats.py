"""fieldgate stats."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from cli.common import Column, ConfigOpt, DataDirOpt, VerboseOpt, console, read_store, settings, show_rows


def stats_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Counts (orders by status, delivery acks, rejections, GPS fixes, outbox) and how deliveries went per shop
    and per courier: delivered, on-time rate, mean delivery time, average stars.

    Example:

        fieldgate stats --json
    """
    store = read_store(settings(config, data_dir, verbose))
    stats, performance = store.stats(), store.performance()
    if as_json:
        console.print_json(json.dumps({**stats, "performance": performance}))
        return
    table = Table("what", "count", title="fieldgate stats")
    for key, value in stats.items():
        if isinstance(value, dict):
            for sub, count in value.items():
                table.add_row(f"{key.replace('_by_', ' by ').replace('_', ' ')}: {sub}", str(count))
        else:
            table.add_row(key.replace("_", " "), str(value))
    console.print(table)
    for what, rows in performance.items():
        show_rows(rows, [
            Column(what.rstrip("s"), lambda r, w=what: r[f"{w.rstrip('s')}_id"]),
            Column("delivered", lambda r: str(r["delivered"]), justify="right"),
            Column("on time", lambda r: "-" if r["on_time_rate"] is None else f"{r['on_time_rate']:.0%}",
                   justify="right"),
            Column("mean min", lambda r: f"{r['mean_delivery_minutes']:g}", justify="right"),
            Column("stars", lambda r: "-" if r["stars"] is None else f"{r['stars']:.2f} ({r['ratings']})",
                   justify="right"),
        ], title=f"deliveries by {what.rstrip('s')}", empty="")
