"""Start-up checks of the SQLite files: corrupt or foreign files are moved aside, never trusted.

Each file fieldgate writes carries its own `PRAGMA application_id`; a file without it (and with
tables in it) is not ours. `check` runs `PRAGMA quick_check`; `quarantine` renames a bad file
(and its -wal/-shm) to `<name>.bad-<UTC time>` so the gateway can start on a fresh one and an
operator can still inspect the old one.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from gateway.errors import StoreError, translate
from gateway.store.version import version_problem

log = logging.getLogger("fieldgate.store")

#: PRAGMA application_id of each file ('FGDB', 'FGBR').
APPLICATION_IDS = {"fieldgate.db": 0x46474442, "broker.db": 0x46474252}


@dataclass(frozen=True)
class Check:
    path: Path
    ok: bool
    problem: str = ""


def check(path: Path) -> Check:
    """Is `path` a healthy fieldgate SQLite file? A missing file is fine (it will be created)."""
    if not path.exists():
        return Check(path, True)
    expected = APPLICATION_IDS[path.name]
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
            if app_id != expected and (app_id != 0 or tables):
                return Check(path, False, f"not a fieldgate {path.name} (application_id {app_id:#x})")
            result = [row[0] for row in conn.execute("PRAGMA quick_check")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return Check(path, False, str(exc))
    if result != ["ok"]:
        return Check(path, False, "; ".join(result[:5]))
    return Check(path, True)


def quarantine(path: Path) -> Path:
    """Move a bad file (and its WAL and shared-memory files) aside; return its new name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.bad-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        part = path.with_name(path.name + suffix)
        if part.exists():
            part.rename(target.with_name(target.name + suffix))
    return target


def ensure_usable(path: Path) -> None:
    """At start: a corrupt or foreign file is moved aside with an error log, and a new one is made."""
    result = check(path)
    if not result.ok:
        moved = quarantine(path)
        log.error(
            "%s is unusable (%s); moved it to %s and starting with an empty one. What it held is not served; "
            "inspect the moved file with the sqlite3 shell.", path, result.problem, moved,
            extra={"ctx": {"file": str(path), "moved_to": str(moved)}},
        )


def connect(path: Path, *, readonly: bool = False, synchronous: str = "FULL") -> sqlite3.Connection:
    """Open one of fieldgate's files: read-only (safe beside a running gateway), or for writing in WAL mode
    with the given fsync policy and fieldgate's application_id. Transactions are the caller's (autocommit off)."""
    try:
        if readonly:
            if not path.exists():
                raise StoreError(f"no fieldgate database at {path}")
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            conn.execute(f"PRAGMA application_id = {APPLICATION_IDS[path.name]}")
        conn.execute("PRAGMA busy_timeout=5000")
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open {path}: {exc}", hint=(translate(exc) or StoreError("")).hint) from exc
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT on a connection in autocommit mode (as `connect` opens them); rolls back if the
    block raises. The one place fieldgate begins and ends a transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def add_missing_columns(db: sqlite_utils.Database, table: str, columns: dict[str, Any]) -> None:
    """Forward migration of an existing table: add each column it lacks (SQLite's ALTER TABLE ADD COLUMN)."""
    have = {c.name for c in db[table].columns}
    for name, (kind, default) in columns.items():
        if name not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}" + ("" if default is None else
                                                                          f" NOT NULL DEFAULT {default!r}"))


class SqliteFile:
    """What both stores share: open the file (read-only, or for writing and then migrate it), close it.

    Writing opens create a missing file only with `create=True`; they migrate an older schema
    forward (`_migrate` is idempotent) and refuse a newer one. Read-only opens never create or
    migrate anything: a missing, empty or older file is a StoreError saying what to do.
    """

    SCHEMA_VERSION = 1

    def __init__(self, path: Path, *, readonly: bool = False, synchronous: str = "FULL", create: bool = True) -> None:
        self.path = path
        self.readonly = readonly
        self.synchronous = synchronous
        if not path.exists() and (readonly or not create):
            raise StoreError(f"no fieldgate database at {path}",
                             hint="Point --data-dir (or --config) at the data directory `fieldgate serve` uses"
                             + ("." if readonly else ", or pass --init to create a new one there."))
        self.conn = connect(path, readonly=readonly, synchronous=synchronous)
        self.db = sqlite_utils.Database(self.conn)
        try:
            if readonly:
                self._check_version()
            else:
                self._upgrade()
        except BaseException:
            self.conn.close()
            raise

    def _version(self) -> int | None:
        if not self.db["meta"].exists():
            return None
        found = self.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return None if found is None else int(found[0])

    def _check_version(self) -> None:
        problem = version_problem(str(self.path), self._version(), self.SCHEMA_VERSION, readonly=True)
        if problem is not None:
            raise problem

    def _upgrade(self) -> None:
        """Create or migrate the schema in one transaction; refuse a file from a newer fieldgate."""
        with transaction(self.conn):
            problem = version_problem(str(self.path), self._version(), self.SCHEMA_VERSION, readonly=False)
            if problem is not None:
                raise problem
            self.db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
            self._migrate()
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(self.SCHEMA_VERSION),))

    def _migrate(self) -> None:
        """Create the tables and indexes this file needs, and add columns older files lack (idempotent)."""
        raise NotImplementedError

    def close(self) -> None:
        self.conn.close()


def vacuum(path: Path) -> tuple[int, int]:
    """VACUUM one file; (bytes before, bytes after)."""
    before = path.stat().st_size
    conn = sqlite3.connect(path)
    try:
        conn.execute("VACUUM")
    finally:
        conn.close()
    return before, path.stat().st_size
