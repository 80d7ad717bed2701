"""What every command shares: the --config/--data-dir/--verbose options, opening the store, the console,
and the rendering of lists (tables readable at 80 columns, or --json for scripts)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gateway.config import Settings, load_settings
from gateway.errors import InvalidInput
from gateway.store import datadir
from gateway.store.database import location_of
from gateway.store.queries import Queries
from gateway.store.tables import Store

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="broker.yaml to read [default: $FIELDGATE_CONFIG, else ./broker.yaml, "
                 "~/.config/fieldgate/broker.yaml, /etc/fieldgate/broker.yaml]", dir_okay=False),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", "-d", help="where fieldgate.db lives [default: $FIELDGATE_DATA_DIR, else the "
                 "config's storage.data_dir, else ~/.local/share/fieldgate]", file_okay=False),
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="say which config and data directory are used")]
InitOpt = Annotated[bool, typer.Option("--init", help="create the database if the data directory has none")]
JsonOpt = Annotated[bool, typer.Option("--json", help="one JSON object per line, for scripts")]
WideOpt = Annotated[bool, typer.Option("--wide", help="every column, however wide the table gets")]


@dataclass
class Used:
    """What this invocation resolved, so an error can say which data directory it concerned."""

    settings: Settings | None = None


used = Used()


def settings(config: Path | None, data_dir: Path | None, verbose: bool = False, **overrides: Any) -> Settings:
    """Load the settings once per command; with --verbose, say where config and data come from."""
    s = load_settings(config, data_dir=data_dir, **overrides)
    used.settings = s
    if verbose:
        errors.print(f"config: {s.config_path or 'none found (built-in defaults)'}")
        errors.print(f"data directory: {s.data_dir} ({s.data_dir_origin})")
    return s


def where() -> str | None:
    """'data directory X (from …)', for error messages, once a command has resolved it."""
    s = used.settings
    return None if s is None else f"data directory {s.data_dir} ({s.data_dir_origin})"


def read_store(s: Settings) -> Queries:
    """The gateway's database, read-only: safe while `fieldgate serve` writes it; never creates a file."""
    return Queries(location_of(s))


def write_store(s: Settings, *, init: bool = False) -> Store:
    """The gateway's database for writing; a missing one is created only with --init."""
    return Store(location_of(s), synchronous=s.storage.synchronous.upper(), create=init)


def gateway_pid(s: Settings) -> str | None:
    return datadir.holder(s.data_dir)


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], **values: Any) -> M:
    """A model built from a command's arguments, or InvalidInput naming each bad one."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: "
                             f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise InvalidInput(f"invalid {model.__name__.lower()}: {problems}") from None


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


@dataclass(frozen=True)
class Column:
    """One column of a list command: its header, how to show a row, and whether it is only for --wide."""

    header: str
    cell: Callable[[dict[str, Any]], str]
    wide_only: bool = False
    justify: str = "left"


def show_rows(rows: Sequence[dict[str, Any]], columns: Iterable[Column], *, title: str, empty: str,
              as_json: bool = False, wide: bool = False, note: str | None = None) -> None:
    """Print a list: one JSON object per line (--json), or a table that fits 80 columns (all columns with --wide).

    Headers never wrap or get cut (they are chosen short); long cells wrap within their column.
    """
    if as_json:
        for row in rows:
            print(json.dumps(row, default=str, ensure_ascii=False))
        return
    if not rows:
        console.print(empty)
        return
    table = Table(title=title, expand=False)
    shown = [c for c in columns if wide or not c.wide_only]
    for c in shown:
        table.add_column(c.header, justify=c.justify, overflow="fold", min_width=len(c.header))  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*(c.cell(row) for c in shown))
    if wide:
        Console(width=max(console.width, 400), highlight=False).print(table)
    else:
        console.print(table)
    if note:
        console.print(note)


def progress(*, disable: bool = False) -> Progress:
    """The one progress bar of long CLI work (vacuum, purge, simulate): what, bar, done of all, time so far.
    A task with total=None pulses (work of unknown length)."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, disable=disable, transient=False)
