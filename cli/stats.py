"""fieldgate stats."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from cli.common import ConfigOpt, DataDirOpt, VerboseOpt, console, read_store, settings


def stats_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Counts: orders by status, delivery acks, rejections (dead letters), GPS fixes, outbox.

    Example:

        fieldgate stats --json
    """
    stats = read_store(settings(config, data_dir, verbose)).stats()
    if as_json:
        console.print_json(json.dumps(stats))
        return
    table = Table("what", "count", title="fieldgate stats")
    for key, value in stats.items():
        if isinstance(value, dict):
            for sub, count in value.items():
                table.add_row(f"{key.replace('_by_', ' by ').replace('_', ' ')}: {sub}", str(count))
        else:
            table.add_row(key.replace("_", " "), str(value))
    console.print(table)
