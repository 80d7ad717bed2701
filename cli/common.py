"""What every command shares: the --config/--data-dir options, opening the store, the console."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gateway.config import Settings, load_settings
from gateway.store import Store, db_path

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="broker.yaml to read [default: $FIELDGATE_CONFIG, else ./broker.yaml]",
                 dir_okay=False),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", "-d", help="where fieldgate.db lives [default: $FIELDGATE_DATA_DIR, else the "
                 "config's storage.data_dir]", file_okay=False),
]


def settings(config: Path | None, data_dir: Path | None, port: int | None = None, *,
             no_anonymous: bool = False) -> Settings:
    return load_settings(config, data_dir=data_dir, port=port, no_anonymous=no_anonymous)


def open_store(config: Path | None, data_dir: Path | None) -> Store:
    """The gateway's database, read-only: safe while `fieldgate serve` writes it."""
    return Store(db_path(settings(config, data_dir).data_dir), readonly=True)


def when(stamp: str | None) -> str:
    """An ISO timestamp as 'YYYY-MM-DD HH:MM:SS' UTC, for tables."""
    return datetime.fromisoformat(stamp).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if stamp else "-"


def ago(stamp: str | None) -> str:
    """'12s ago' style age of an ISO timestamp, for tables."""
    if not stamp:
        return "-"
    seconds = int((datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"
