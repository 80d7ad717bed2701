"""Where fieldgate.db's tables live: a SQLite file (the default) or a PostgreSQL database (`storage.url`).

`open_database` is the one place that chooses. Both kinds answer the same small surface
(`Database`), so `gateway.store.tables` and `gateway.store.queries` are written once:

    conn           execute / executemany, as sqlite3's (PostgreSQL: `gateway.store.postgres.PgConnection`)
    query          rows as dicts
    transaction()  BEGIN … COMMIT, rolled back if the block raises
    savepoint()    a nested all-or-nothing step (one per inbound message)
    lock(key)      hold an order or a courier to the commit (SQLite: nothing to do, its writer is alone)
    leads(name)    does this process hold the lease on work one bridge does for all (SQLite: always)
    where          what to name it in messages (a path, or the URL without its password)
    directory      the folder of the SQLite file (None on PostgreSQL: the data directory is used)
    shared         several bridges may write it at once (PostgreSQL), or one only (the SQLite file)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from gateway.store import schema, sqlite

if TYPE_CHECKING:
    from gateway.config import Settings

#: A store's location: the SQLite file's path, or a postgresql:// URL.
Location = Path | str

DB_NAME = "fieldgate.db"


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]], /) -> Cursor: ...


class Database(Protocol):
    conn: Connection
    where: str
    directory: Path | None
    shared: bool

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    def transaction(self) -> AbstractContextManager[Any]: ...

    def savepoint(self) -> AbstractContextManager[None]: ...

    def lock(self, key: str) -> None: ...

    def leads(self, name: str) -> bool: ...

    def close(self) -> None: ...


def is_postgres(location: Location) -> bool:
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def redacted(url: str) -> str:
    """A database URL fit for logs and messages: its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def location_of(settings: Settings) -> Location:
    """Where the settings put the store: `storage.url` if set, else `<data_dir>/fieldgate.db`."""
    return settings.storage.url or settings.data_dir / DB_NAME


class Savepoint:
    """SAVEPOINT … RELEASE, rolled back to its start if the block raises (one per inbound message: kept light)."""

    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("SAVEPOINT step")

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:
            self.conn.execute("ROLLBACK TO step")
        self.conn.execute("RELEASE step")


class FieldgateFile(sqlite.SqliteFile):
    """fieldgate.db as a SQLite file (WAL mode: readers read while the one writer writes)."""

    SCHEMA_VERSION = schema.SCHEMA_VERSION
    shared = False

    @property
    def where(self) -> str:
        return str(self.path)

    @property
    def directory(self) -> Path:
        return self.path.parent

    def _migrate(self) -> None:
        schema.migrate_sqlite(self.db)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return list(self.db.query(sql, params))

    def transaction(self) -> AbstractContextManager[Any]:
        return sqlite.transaction(self.conn)

    def savepoint(self) -> Savepoint:
        return Savepoint(self.conn)

    def lock(self, key: str) -> None:
        """Nothing to hold: BEGIN IMMEDIATE already makes the one writer's transactions take turns."""

    def leads(self, name: str) -> bool:
        """A SQLite file has one gateway: it does everything."""
        return True


def open_database(location: Location, *, readonly: bool = False, synchronous: str = "FULL",
                  create: bool = True) -> Database:
    """Open fieldgate.db's tables for writing (created or migrated) or read-only (version checked)."""
    if is_postgres(location):
        from gateway.store.postgres import PgDatabase  # psycopg loads only for a PostgreSQL store

        return PgDatabase(str(location), readonly=readonly, create=create)
    return FieldgateFile(Path(location), readonly=readonly, synchronous=synchronous, create=create)
