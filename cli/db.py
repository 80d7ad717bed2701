"""fieldgate db check / vacuum, and fieldgate sessions."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.table import Table

from cli.common import ConfigOpt, DataDirOpt, ago, console, settings
from gateway import dbfiles
from gateway.broker_store import BrokerStore
from gateway.errors import StoreError

app = typer.Typer(help="Check and compact the SQLite files.", no_args_is_help=True)


def _files(config: Path | None, data_dir: Path | None) -> list[Path]:
    directory = settings(config, data_dir).data_dir
    return [directory / name for name in dbfiles.APPLICATION_IDS]


@app.command("check")
def check_cmd(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Check fieldgate.db and broker.db (PRAGMA quick_check, and that they are fieldgate's). Exit 1 if not.

    Safe while the gateway runs. `fieldgate serve` runs the same check at start and moves a bad file aside.

    Example:

        fieldgate db check --data-dir ./data
    """
    bad = False
    for path in _files(config, data_dir):
        result = dbfiles.check(path)
        state = "missing (created at start)" if not path.exists() else "ok" if result.ok else result.problem
        console.print(f"{path}: {'[green]' if result.ok else '[red]'}{state}[/]")
        bad |= not result.ok
    if bad:
        raise typer.Exit(1)


@app.command("vacuum")
def vacuum_cmd(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Compact fieldgate.db and broker.db (SQLite VACUUM). Stop the gateway first: VACUUM needs it idle.

    Example:

        fieldgate db vacuum --data-dir ./data
    """
    for path in _files(config, data_dir):
        if path.exists():
            before, after = dbfiles.vacuum(path)
            console.print(f"{path}: {before:,} → {after:,} bytes")


def sessions_cmd(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """List the embedded broker's sessions: connected or not, subscriptions, queued messages, drops.

    Example:

        fieldgate sessions --data-dir ./data
    """
    path = settings(config, data_dir).data_dir / "broker.db"
    if not path.exists():
        raise StoreError(f"no broker database at {path}", hint="Is this the data dir of `fieldgate serve`?")
    rows = BrokerStore(path, readonly=True).sessions_report()
    table = Table("client id", "connected", "kind", "last seen", "subscriptions", "queued", "queued bytes",
                  "sent, no PUBACK", "dropped", "denied", title="broker sessions")
    for row in rows:
        seen = datetime.fromtimestamp(row["last_seen"], UTC).isoformat()
        table.add_row(row["client_id"], "[green]yes[/]" if row["connected"] else "no",
                      "clean" if row["clean"] else "persistent", ago(seen), str(row["subscriptions"]),
                      str(row["queued"]), f"{row['queued_bytes']:,}", str(row["sent_unacked"]),
                      f"[red]{row['dropped']}[/]" if row["dropped"] else "0",
                      f"[yellow]{row['denied']}[/]" if row["denied"] else "0")
    console.print(table if rows else "no sessions")
