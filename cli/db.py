"""fieldgate db check / vacuum, and fieldgate sessions."""

from __future__ import annotations

from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

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
    progress,
    read_store,
    settings,
    show_rows,
)
from gateway.broker.store import DB_NAME as BROKER_DB
from gateway.broker.store import BrokerStore
from gateway.config import Settings
from gateway.store import datadir, sqlite
from gateway.store.database import DB_NAME, redacted
from gateway.store.media import MediaFiles

app = typer.Typer(help="Check and compact the SQLite files.", no_args_is_help=True)


def _files(s: Settings) -> list[Path]:
    """The SQLite files of the data directory: fieldgate.db (unless the tables are in PostgreSQL) and broker.db."""
    return [s.data_dir / name for name in sqlite.APPLICATION_IDS if name != DB_NAME or not s.storage.url]


def _postgres_note(s: Settings) -> None:
    if s.storage.url:
        console.print(f"{redacted(s.storage.url)}: the tables are in PostgreSQL, checked and compacted by its own "
                      "tools (autovacuum); `fieldgate cluster check --store URL` says whether the bridges reach it")


@app.command("check")
def check_cmd(fix: Annotated[bool, typer.Option("--fix", help="remove orphaned media files (needs the gateway "
                                                "stopped)")] = False,
              config: ConfigOpt = None, data_dir: DataDirOpt = None, verbose: VerboseOpt = False) -> None:
    """Check fieldgate.db and broker.db (PRAGMA quick_check, and that they are fieldgate's) and the media files
    (each named by a row). Exit 1 if something is wrong and not fixed.

    Safe while the gateway runs (but --fix, which removes media files no row names, needs it stopped).
    `fieldgate serve` runs the same file check at start and moves a bad file aside.

    Example:

        fieldgate db check --data-dir ./data
    """
    s = settings(config, data_dir, verbose)
    directory = s.data_dir
    bad = False
    _postgres_note(s)
    for path in _files(s):
        result = sqlite.check(path)
        state = "missing (created at start)" if not path.exists() else "ok" if result.ok else result.problem
        console.print(f"{path}: {'[green]' if result.ok else '[red]'}{state}[/]")
        bad |= not result.ok
    if (s.storage.url or (directory / DB_NAME).exists()) and not bad:
        files = MediaFiles(directory)
        with datadir.exclusive(directory) if fix else nullcontext():
            orphans = files.orphans(read_store(s).media_shas())
            for orphan in orphans:
                if fix:
                    orphan.unlink()
            console.print(f"{files.root}: " + ("[green]ok[/], no orphaned files" if not orphans else
                          f"[green]removed {len(orphans)} orphaned file(s)[/]" if fix else
                          f"[red]{len(orphans)} orphaned file(s)[/] (no row names them; --fix removes them)"))
            bad |= bool(orphans) and not fix
    if bad:
        raise typer.Exit(1)


@app.command("vacuum")
def vacuum_cmd(config: ConfigOpt = None, data_dir: DataDirOpt = None, verbose: VerboseOpt = False) -> None:
    """Compact fieldgate.db and broker.db (SQLite VACUUM). Refuses while a gateway runs on the directory:
    VACUUM needs it stopped (and holds it, so none starts meanwhile).

    Example:

        fieldgate db vacuum --data-dir ./data
    """
    s = settings(config, data_dir, verbose)
    _postgres_note(s)
    with datadir.exclusive(s.data_dir), progress() as bar:
        for path in [p for p in _files(s) if p.exists()]:
            task = bar.add_task(f"vacuum {path.name}", total=None)  # SQLite says nothing of how far it got
            before, after = sqlite.vacuum(path)
            bar.update(task, total=1, completed=1)
            bar.console.print(f"{path}: {before:,} → {after:,} bytes")


def sessions_cmd(as_json: JsonOpt = False, wide: WideOpt = False, config: ConfigOpt = None,
                 data_dir: DataDirOpt = None, verbose: VerboseOpt = False) -> None:
    """List the embedded broker's sessions: connected or not, queued and unacknowledged messages, messages
    dropped (queue full), publishes and subscriptions denied, publishes outside the topic contract.

    Example:

        fieldgate sessions --data-dir ./data
    """
    rows = BrokerStore(settings(config, data_dir, verbose).data_dir / BROKER_DB, readonly=True).sessions_report()
    for row in rows:
        row["last_seen"] = datetime.fromtimestamp(row["last_seen"], UTC).isoformat()
        row["clean"], row["connected"] = bool(row["clean"]), bool(row["connected"])
    show_rows(rows, [
        Column("client id", lambda r: r["client_id"]),
        Column("up", lambda r: "[green]yes[/]" if r["connected"] else "no"),
        Column("kind", lambda r: "clean" if r["clean"] else "persistent", wide_only=True),
        Column("seen", lambda r: ago(r["last_seen"])),
        Column("subs", lambda r: str(r["subscriptions"]), justify="right", wide_only=True),
        Column("queued", lambda r: str(r["queued"]), justify="right"),
        Column("bytes", lambda r: f"{r['queued_bytes']:,}", justify="right", wide_only=True),
        Column("unacked", lambda r: str(r["sent_unacked"]), justify="right"),
        Column("dropped", lambda r: f"[red]{r['dropped']}[/]" if r["dropped"] else "0", justify="right"),
        Column("denied", lambda r: f"[yellow]{r['denied']}[/]" if r["denied"] else "0", justify="right"),
        Column("stray", lambda r: f"[yellow]{r['off_contract']}[/]" if r["off_contract"] else "0", justify="right"),
    ], title="broker sessions", empty="no sessions", as_json=as_json, wide=wide,
        note="stray: publishes to topics outside the topic contract (see the log for which)")
