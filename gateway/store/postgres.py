"""fieldgate.db's tables on PostgreSQL (`storage.url: postgresql://…`): several bridges share one database.

The only module that imports psycopg. The store's SQL is written once, in what both engines read
(upserts with ON CONFLICT, RETURNING, IS NOT DISTINCT FROM, a quoted "user"); `PgConnection`
makes the few rewrites PostgreSQL still needs, once per statement:

    as written (SQLite)             on PostgreSQL
    ?                               %s (a literal % doubled)
    json_extract(x, '$.a.b')        (x::json #>> '{a,b}'): text, as SQLite gives for text (an object's
                                    text as written); the SQL
                                    casts where it wants a number or a flag
    GROUP_CONCAT(x, sep)            string_agg(x, sep)
    a True/False parameter          1/0, as SQLite stores it (flags are integer columns)
    a NUL character in a text       U+FFFD (PostgreSQL's text cannot hold NUL; a refused payload
    parameter                       may carry one into a dead letter's msg_id)

It answers like sqlite3: `execute` returns rows to fetch (read at once: the connection goes back
to the pool), `query` returns dicts as sqlite-utils' does.

Connections come from a pool (psycopg_pool), checked before use, so a restarted PostgreSQL costs
one failed batch, not the bridge. Statements outside a transaction run in autocommit (readers);
`transaction()` holds one connection from BEGIN to COMMIT (READ COMMITTED). Several bridges write
at once: a writer locks what it is about to read and change — an order, a courier — with
`pg_advisory_xact_lock` (`lock`), held to the commit, so two instances never interleave on one
order (a row lock would not cover an order that does not exist yet). Upserts are single statements.
Two instances locking in opposite orders deadlock; PostgreSQL aborts one, and like a serialization
failure or a lost connection that is `StoreBusy`: the bridge runs the batch again.

Schema: `PgDatabase` creates or migrates it (`gateway.store.schema.postgres_ddl`) under an advisory
lock, so instances starting together take turns, and checks its version as the SQLite file does.
"""

from __future__ import annotations

import logging
import re
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from gateway.errors import StoreBusy, StoreError
from gateway.store import schema
from gateway.store.database import redacted
from gateway.store.version import version_problem

log = logging.getLogger("fieldgate.store")

#: The advisory lock that serialises schema migrations ('FGDB').
MIGRATION_LOCK = 0x46474442
#: Most connections one process keeps to PostgreSQL (the writer holds one; readers share the rest).
POOL_SIZE = 4
#: Longest a statement waits for a connection from the pool, in seconds.
CONNECT_TIMEOUT = 10.0

#: Advisory lock classes (the first of two int4 keys): an instance's slot, a partition of the inbound queues, and a
#: lease on work one bridge does for all (`PgDatabase.leads`).
INSTANCE_LOCKS = 0x46470001
PARTITION_LOCKS = 0x46470002
LEASE_LOCKS = 0x46470003
#: How often a lease held is confirmed (its session still alive), in seconds.
LEASE_CHECK_SECONDS = 5.0
#: Most bridge instances on one database.
MAX_INSTANCES = 256

_JSON_EXTRACT = re.compile(r"json_extract\(([\w.]+), '\$\.([\w.]+)'\)")
_CONFLICTS = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure, pg_errors.LockNotAvailable)


def _session(url: str) -> psycopg.Connection[Any]:
    """A connection of its own, outside the pool (autocommit): for session locks, and for a look from outside."""
    return psycopg.connect(url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT))


def _held_locks(conn: psycopg.Connection[Any]) -> list[tuple[int, int]]:
    """(lock class, holder's backend pid) of every granted two-key advisory lock in this database."""
    return conn.execute(
        "SELECT classid, pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())").fetchall()


def _schema_version(execute: Callable[[str], Any]) -> int | None:
    """The schema version a database holds (None: no fieldgate tables), read with `execute` (a pooled or an own
    connection's)."""
    found = execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
    if not found or not found[0]:
        return None
    row = execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else int(row[0])


@lru_cache(maxsize=512)
def dialect(sql: str) -> str:
    """A statement of the store's SQL as PostgreSQL reads it (see the table above)."""
    sql = sql.replace("%", "%%").replace("?", "%s")
    sql = _JSON_EXTRACT.sub(lambda m: f"({m[1]}::json #>> '{{{m[2].replace('.', ',')}}}')", sql)
    return re.sub(r"\bGROUP_CONCAT\(", "string_agg(", sql, flags=re.IGNORECASE)


def _param(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


def _params(params: Sequence[Any] | None) -> list[Any]:
    return [_param(p) for p in params or ()]


class Rows:
    """What a statement returned, read out of its cursor: fetchone, fetchall, iteration, rowcount."""

    __slots__ = ("_rows", "description", "rowcount")

    def __init__(self, cursor: psycopg.Cursor[Any] | None = None) -> None:
        self.description = None if cursor is None else cursor.description
        self._rows: list[tuple[Any, ...]] = cursor.fetchall() if cursor and cursor.description is not None else []
        self.rowcount = 0 if cursor is None else cursor.rowcount

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self._rows)


class LazySavepoint:
    """SAVEPOINT … RELEASE around a step, rolled back to its start if the block raises; opened only once the step
    runs a statement (a fix, most of the traffic, runs none: two round trips saved per message). Reusable."""

    __slots__ = ("conn",)

    def __init__(self, conn: PgConnection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn._step = "due"

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        opened, self.conn._step = self.conn._step == "open", ""
        if opened:
            if kind is not None:
                self.conn.execute("ROLLBACK TO SAVEPOINT step")
            self.conn.execute("RELEASE SAVEPOINT step")


def _translated(exc: psycopg.Error, where: str) -> StoreError | None:
    """psycopg's error said the fieldgate way; None for one that is a bug (bad SQL, a violated constraint)."""
    if isinstance(exc, _CONFLICTS):
        return StoreBusy(f"a transaction conflicted with another one on {where}: {exc.diag.message_primary or exc}")
    if isinstance(exc, psycopg.OperationalError | PoolTimeout):
        return StoreBusy(f"lost or cannot get a connection to {where}: {str(exc).strip()}",
                         hint="Is PostgreSQL up and reachable? `fieldgate cluster check --store URL` says.")
    return None


class PgConnection:
    """A pool of connections to one database, used like the store's sqlite3 connection. One thread at a time
    (as the SQLite store): the writer's thread, or the reader's lock-holder (`gateway.http.reader`)."""

    def __init__(self, url: str, *, size: int = POOL_SIZE) -> None:
        self.where = redacted(url)
        self._held: psycopg.Connection[Any] | None = None
        self._step: str = ""  # "due": a savepoint opens before the next statement; "open": it has
        try:
            self.pool = ConnectionPool(url, min_size=1, max_size=size, kwargs={"autocommit": True},
                                       check=ConnectionPool.check_connection, timeout=CONNECT_TIMEOUT,
                                       name="fieldgate", open=False)
            self.pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except (psycopg.Error, PoolTimeout) as exc:
            raise StoreError(f"cannot connect to {self.where}: {str(exc).strip() or type(exc).__name__}",
                             hint="Check storage.url (host, port, database, user, password) and that PostgreSQL "
                             "is running and accepts this user.") from exc

    def _run(self, conn: psycopg.Connection[Any], sql: str, params: Sequence[Any] | None, many: bool) -> Rows:
        with conn.cursor() as cur:
            if many:
                cur.executemany(dialect(sql), [_params(p) for p in params or ()])
            else:
                cur.execute(dialect(sql), _params(params))
            return Rows(cur)

    def _statement(self, sql: str, params: Any, many: bool) -> Rows:
        try:
            if self._held is not None:
                if self._step == "due":
                    self._step = "open"
                    self._held.execute("SAVEPOINT step")
                return self._run(self._held, sql, params, many)
            with self.pool.connection() as conn:
                return self._run(conn, sql, params, many)
        except (psycopg.Error, PoolTimeout) as exc:
            raise (_translated(exc, self.where) or exc) from exc

    def execute(self, sql: str, params: Sequence[Any] | None = ()) -> Rows:
        return self._statement(sql, params, False)

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> Rows:
        rows = list(seq)
        return self._statement(sql, rows, True) if rows else Rows()

    def query(self, sql: str, params: Sequence[Any] | None = ()) -> list[dict[str, Any]]:
        """Rows as dicts (column name → value), as sqlite-utils' `Database.query` gives them."""
        rows = self.execute(sql, params)
        names = [c.name for c in rows.description or ()]
        return [dict(zip(names, row, strict=True)) for row in rows]

    @contextmanager
    def transaction(self) -> Iterator[PgConnection]:
        """BEGIN … COMMIT on one pooled connection; rolled back if the block raises."""
        if self._held is not None:
            raise StoreError("a transaction is already open on this connection (a fieldgate bug)")
        try:
            with self.pool.connection() as conn:
                self._held = conn
                try:
                    with conn.transaction():
                        yield self
                finally:
                    self._held = None
        except (psycopg.Error, PoolTimeout) as exc:
            raise (_translated(exc, self.where) or exc) from exc

    def savepoint(self) -> LazySavepoint:
        return LazySavepoint(self)

    def lock(self, key: str) -> None:
        """Hold `key` (e.g. "order:o-1") until this transaction ends; another transaction locking it waits."""
        if self._held is not None:
            self.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (key,))

    def close(self) -> None:
        self.pool.close()


class PgDatabase:
    """fieldgate's tables in a PostgreSQL database: opened for writing (schema created or migrated) or read-only
    (the schema version checked). The counterpart of the SQLite file's `gateway.store.database.FieldgateFile`."""

    directory = None  # no files beside the database: the data directory holds the secret key and the media
    shared = True

    def __init__(self, url: str, *, readonly: bool = False, create: bool = True) -> None:
        self.conn = PgConnection(url, size=POOL_SIZE)
        self.where = self.conn.where
        self._url = url
        self._leases: psycopg.Connection[Any] | None = None  # the session holding this process's leases
        self._held: dict[str, float] = {}  # lease -> when last confirmed
        try:
            if readonly:
                problem = version_problem(self.where, self._version(), schema.SCHEMA_VERSION, readonly=True)
                if problem is not None:
                    raise problem
            else:
                self._upgrade(create)
        except BaseException:
            self.conn.close()
            raise

    def _version(self) -> int | None:
        return _schema_version(self.conn.execute)

    def _upgrade(self, create: bool) -> None:
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            found = self._version()
            if found is None and not create:
                raise StoreError(f"{self.where} holds no fieldgate tables yet",
                                 hint="Start `fieldgate bridge` on it once, or pass --init to create them.")
            problem = version_problem(self.where, found, schema.SCHEMA_VERSION, readonly=False)
            if problem is not None:
                raise problem
            if found == schema.SCHEMA_VERSION:
                return  # made or brought forward by this version already: nothing to create
            for statement in ["CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
                              *schema.postgres_ddl()]:
                self.conn.execute(statement)
            self.conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) "
                              "DO UPDATE SET value = excluded.value", (str(schema.SCHEMA_VERSION),))

    def transaction(self) -> Any:
        return self.conn.transaction()

    def savepoint(self) -> LazySavepoint:
        return self.conn.savepoint()

    def leads(self, name: str) -> bool:
        """Does this process hold the lease `name` (taking it if free)? Work one bridge does for all the others —
        timers, re-sends, operators' commands, webhook deliveries — runs where the lease is; it is a session lock,
        so when its holder dies another takes it at its next look."""
        now = time.monotonic()
        try:
            if self._leases is None or self._leases.closed:
                self._leases, self._held = _session(self._url), {}
            if name in self._held:
                if now - self._held[name] >= LEASE_CHECK_SECONDS:
                    self._leases.execute("SELECT 1")
                    self._held[name] = now
                return True
            key = zlib.crc32(name.encode()) & 0x7FFFFFFF
            if self._leases.execute("SELECT pg_try_advisory_lock(%s, %s)", (LEASE_LOCKS, key)).fetchone()[0]:
                self._held[name] = now
                log.info("this bridge took the lease", extra={"ctx": {"lease": name}})
                return True
            return False
        except psycopg.Error as exc:
            log.warning("lease session lost (%s)", str(exc).strip(), extra={"ctx": {"lease": name}})
            if self._leases is not None:
                self._leases.close()
            self._leases, self._held = None, {}
            return False

    def lock(self, key: str) -> None:
        self.conn.lock(key)

    def query(self, sql: str, params: Sequence[Any] | None = ()) -> list[dict[str, Any]]:
        return self.conn.query(sql, params)

    def close(self) -> None:
        if self._leases is not None:
            self._leases.close()
        self.conn.close()


class PartitionLocks:
    """Which of the inbound queues' partitions this bridge instance consumes, decided with the other instances on
    the same database by session advisory locks (`gateway.bridge.amqp` asks; the RabbitMQ side is there).

    An instance holds one slot lock while it runs, so every instance can count the live ones; it holds a
    partition's lock while it consumes that partition, so no two instances consume one. Each takes up to its
    fair share, ceil(partitions / live instances), of the free partitions, starting at a place its slot picks
    (instances started together spread out); one holding more than its share after another joined gives the
    surplus up (`review`), and releases each once it has committed what it got from it (`release`). The locks
    live as long as this connection: an instance that dies frees its partitions for the others at once."""

    def __init__(self, url: str, partitions: int) -> None:
        self.url = url
        self.where = redacted(url)
        self.partitions = partitions
        self.slot: int | None = None
        self._conn: psycopg.Connection[Any] | None = None

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = _session(self.url)
            self.slot = next((slot for slot in range(MAX_INSTANCES) if self._conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (INSTANCE_LOCKS, slot)).fetchone()[0]), None)
            if self.slot is None:
                raise StoreError(f"more than {MAX_INSTANCES} bridge instances on {self.where}")
        return self._conn

    def review(self, held: set[int]) -> tuple[set[int], set[int]]:
        """(partitions newly taken, partitions to give up) for an instance consuming `held`. If the database is out of
        reach the locks are gone with the connection: give everything up and take nothing."""
        try:
            conn = self._connect()
            live = sum(1 for kind, _ in _held_locks(conn) if kind == INSTANCE_LOCKS)
            share = -(-self.partitions // max(live, 1))
            if len(held) > share:
                return set(), set(sorted(held)[share:])
            taken: set[int] = set()
            start = (self.slot or 0) * share
            for p in ((start + i) % self.partitions for i in range(self.partitions)):
                if len(held) + len(taken) >= share:
                    break
                if p not in held and conn.execute("SELECT pg_try_advisory_lock(%s, %s)",
                                                  (PARTITION_LOCKS, p)).fetchone()[0]:
                    taken.add(p)
            return taken, set()
        except psycopg.Error as exc:
            log.warning("partition locks unreachable (%s); consuming nothing until they are back",
                        str(exc).strip(), extra={"ctx": {"store": self.where}})
            self.close()
            return set(), set(held)

    def release(self, partition: int) -> None:
        """Give a partition up (its messages committed and acknowledged): another instance may take it now."""
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.execute("SELECT pg_advisory_unlock(%s, %s)", (PARTITION_LOCKS, partition))
            except psycopg.Error:
                self.close()  # the connection is gone, and every lock with it

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None


@dataclass(frozen=True)
class StoreCheck:
    """What `fieldgate cluster check` reports of the bridges' PostgreSQL store."""

    store: str
    reachable: bool
    schema_version: int | None = None
    bridges: int | None = None  # bridge instances holding a slot lock: running on this database now
    partitions_owned: int | None = None  # inbound partitions some bridge consumes
    most_by_one: int | None = None  # the most partitions one bridge owns (balanced: ceil(partitions / bridges))
    problem: str | None = None


def check_store(url: str, partitions: int) -> StoreCheck:
    """Reach the store and say what the bridges on it hold (without writing anything)."""
    where = redacted(url)
    try:
        with _session(url) as conn:
            locks = _held_locks(conn)
            version = _schema_version(conn.execute)
    except psycopg.Error as exc:
        return StoreCheck(where, False, problem=f"unreachable: {str(exc).strip()}")
    bridges = sum(1 for kind, _ in locks if kind == INSTANCE_LOCKS)
    by_bridge = Counter(pid for kind, pid in locks if kind == PARTITION_LOCKS)
    owned = sum(by_bridge.values())
    problem = version_problem(where, version, schema.SCHEMA_VERSION, readonly=True)
    if problem is None and bridges and owned < partitions:
        problem = StoreError(f"{partitions - owned} of {partitions} partitions are owned by no bridge")
    return StoreCheck(where, True, version, bridges, owned, max(by_bridge.values(), default=0),
                      None if problem is None else problem.message)
