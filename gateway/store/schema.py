"""fieldgate.db's tables, declared once: the SQLite file and the PostgreSQL database are both made from this.

A `Table` lists its columns in the order the SQLite file has them (columns added by later versions
last, as `ALTER TABLE ADD COLUMN` put them in files made before). Migrating either store creates
what is missing — tables, then columns, then indexes — and never drops or changes anything, so an
older database is brought forward in place and a newer one is refused by its schema version
(`gateway.store.sqlite.SqliteFile`).

    python type   SQLite      PostgreSQL
    str           TEXT        TEXT COLLATE "C" (byte order, as SQLite compares, whatever the database's locale)
    int           INTEGER     BIGINT (a single int primary key: generated as identity)
    float         FLOAT       DOUBLE PRECISION
    bytes         BLOB        BYTEA

A table read in insertion order by SQLite's implicit `rowid` (`Table.rowid`) gets a generated
`rowid` column on PostgreSQL, which has none of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlite_utils

from gateway.store import sqlite

SCHEMA_VERSION = 6

ColumnType = type[str] | type[int] | type[float] | type[bytes]


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    not_null: bool = False
    default: int | float | None = None


@dataclass(frozen=True)
class Index:
    columns: tuple[str, ...]
    unique: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    pk: tuple[str, ...]
    columns: tuple[Column, ...]
    indexes: tuple[Index, ...] = ()
    rowid: bool = False

    @property
    def generated_id(self) -> bool:
        """A single integer primary key, given by the database when an insert leaves it out."""
        return len(self.pk) == 1 and self.column(self.pk[0]).type is int

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _table(name: str, pk: str | tuple[str, ...], columns: str, *, indexes: tuple[Index, ...] = (),
           rowid: bool = False) -> Table:
    """A table from a compact column list: "name type[!][=default], ..." — type one of str, int, float, bytes;
    ! is NOT NULL."""
    types: dict[str, ColumnType] = {"str": str, "int": int, "float": float, "bytes": bytes}
    parsed = []
    for spec in columns.split(","):
        declared, _, default = spec.strip().partition("=")
        column_name, kind = declared.split()
        value: int | float | None = None if not default else (float(default) if "." in default else int(default))
        parsed.append(Column(column_name, types[kind.rstrip("!")], kind.endswith("!"), value))
    return Table(name, (pk,) if isinstance(pk, str) else pk, tuple(parsed), indexes, rowid)


def _ix(*columns: str, unique: bool = False) -> Index:
    return Index(columns, unique)


TABLES: tuple[Table, ...] = (
    _table("orders", "order_id",
           "order_id str, shop_id str!, courier_id str, status str!, progress str!, order_json str!, "
           "location_json str, created_at str!, updated_at str!, purged int=0, state_cleared int!=0, "
           "tracking_json str, dispatch_json str, waiting_since str, change_since str, status_since str",
           indexes=(_ix("shop_id", "status"), _ix("courier_id", "status"), _ix("status", "state_cleared", "updated_at"),
                    _ix("waiting_since"), _ix("change_since"), _ix("shop_id", "status_since"))),
    _table("order_events", "id",
           "id int, order_id str!, at str!, kind str!, status str, actor str, courier_id str, reason str, media_id str",
           indexes=(_ix("order_id", "id"),)),
    _table("tasks", "msg_id",
           "msg_id str, courier_id str!, order_id str!, kind str!, payload bytes!, created_at str!, attempts int=1, "
           "next_retry_at float, superseded int=0, received_at str, read_at str",
           indexes=(_ix("received_at", "superseded", "next_retry_at"), _ix("order_id", "courier_id"))),
    _table("couriers", "courier_id",
           "courier_id str, online int, presence_at str, last_seen_at str, fix_json str, fix_tst int, "
           "registered int!=0, name str, phone str, max_active int, speed_kmh float!=0.0, speed_samples int!=0"),
    _table("courier_shops", ("courier_id", "shop_id"), "courier_id str, shop_id str",
           indexes=(_ix("shop_id", "courier_id"),)),
    _table("shops", "shop_id",
           "shop_id str, name str!, lat float!, lon float!, assignment str!, default_courier str, timezone str!, "
           "locale str!, arrival_radius_m float, created_at str, updated_at str, quiet_hours str, "
           "require_proof int!=0"),
    _table("notices", "notice_id",
           "notice_id str, order_id str!, kind str!, text str!, locale str!, urgent int!, created_at str!, "
           "deferred_until str, sent_at str, dropped_at str",
           indexes=(_ix("order_id", "created_at"), _ix("deferred_until")), rowid=True),
    _table("chat_messages", ("order_id", "seq"),
           "order_id str, seq int, msg_id str!, role str!, sender_id str!, sender_name str, kind str!, text str, "
           "lat float, lon float, media_id str, at str!",
           indexes=(_ix("order_id", "role", "sender_id", "msg_id", unique=True),)),
    _table("chat_reads", ("order_id", "role", "reader_id"),
           "order_id str, role str, reader_id str, read_up_to int!, at str!"),
    _table("media", "media_id",
           "media_id str, order_id str!, role str!, uploader_id str!, kind str!, content_type str!, size int!, "
           "sha256 str!, created_at str!",
           indexes=(_ix("order_id", "kind", "created_at"), _ix("sha256"))),
    _table("tokens", "token_id",
           "token_id str, user str!, digest str!, created_at str!, expires_at str, revoked_at str",
           indexes=(_ix("digest", unique=True),)),
    _table("tracking", "order_id", "order_id str, nonce str!, digest str!, created_at str!",
           indexes=(_ix("digest", unique=True),)),
    _table("webhooks", "endpoint_id",
           "endpoint_id str, url str!, events str!, secret str!, enabled int!, created_at str!, disabled_reason str"),
    _table("webhook_deliveries", "id",
           "id int, endpoint_id str!, webhook_id str!, event str!, order_id str, payload bytes!, created_at str!, "
           "state str!, attempts int!, next_attempt_at str!, last_status int, last_error str, delivered_at str",
           indexes=(_ix("state", "endpoint_id", "order_id", "id"), _ix("created_at"))),
    _table("idempotency", ("user", "key"),
           "user str, key str, request_sha str!, status int!, body bytes!, created_at str!",
           indexes=(_ix("created_at"),)),
    _table("ratings", "order_id", "order_id str, stars int!, comment str, courier_id str, shop_id str!, at str!"),
    _table("devices", ("courier_id", "device"),
           "courier_id str, device str, online int!, how str!, source str!, since str!"),
    _table("commands", "id", "id int, submitted_at str!, payload bytes!, state str!, reason str, hint str, done_at str",
           indexes=(_ix("state", "id"),)),
    _table("gps_fixes", "id",
           "id int, courier_id str!, device str!, lat float!, lon float!, tst int!, acc float, alt float, vel float, "
           "cog float, batt int, tid str, received_at str!",
           indexes=(_ix("courier_id", "device", "tst", unique=True),)),
    _table("dead_letters", "id",
           "id int, received_at str!, topic str!, payload bytes, size int, reason str!, hint str, order_id str, "
           "msg_id str"),
    _table("outbox", "id", "id int, topic str!, payload bytes!, retain int!, created_at str!"),
    _table("users", "name", "name str, role str!, id str!, password_hash str!, created_at str!"),
)

_SQLITE_TYPES = {str: "TEXT", int: "INTEGER", float: "FLOAT", bytes: "BLOB"}


def migrate_sqlite(db: sqlite_utils.Database, tables: tuple[Table, ...] = TABLES) -> None:
    """Create what the SQLite file lacks: tables, then columns (appended, as ALTER TABLE does), then indexes."""
    for t in tables:
        db[t.name].create({c.name: c.type for c in t.columns}, pk=t.pk[0] if len(t.pk) == 1 else t.pk,
                          not_null={c.name for c in t.columns if c.not_null},
                          defaults={c.name: c.default for c in t.columns if c.default is not None},
                          if_not_exists=True)
        sqlite.add_missing_columns(db, t.name, {c.name: (_SQLITE_TYPES[c.type], c.default) for c in t.columns})
        for ix in t.indexes:
            db[t.name].create_index(list(ix.columns), unique=ix.unique, if_not_exists=True)


_PG_TYPES = {str: 'TEXT COLLATE "C"', int: "BIGINT", float: "DOUBLE PRECISION", bytes: "BYTEA"}


def _q(name: str) -> str:
    """An identifier quoted for PostgreSQL (`user` is a reserved word there)."""
    return f'"{name}"'


def _pg_column(t: Table, c: Column) -> str:
    sql = f"{_q(c.name)} {_PG_TYPES[c.type]}"
    if t.generated_id and c.name == t.pk[0]:
        return sql + " GENERATED BY DEFAULT AS IDENTITY"
    if c.not_null:
        sql += " NOT NULL"
    return sql if c.default is None else f"{sql} DEFAULT {c.default!r}"


_PG_ROWID = "rowid BIGINT GENERATED ALWAYS AS IDENTITY"


def postgres_ddl(tables: tuple[Table, ...] = TABLES) -> list[str]:
    """The statements that bring a PostgreSQL database to this schema; each is idempotent."""
    out: list[str] = []
    for t in tables:
        columns = [_pg_column(t, c) for c in t.columns] + ([_PG_ROWID] if t.rowid else [])
        out.append(f"CREATE TABLE IF NOT EXISTS {_q(t.name)} ({', '.join(columns)}, "
                   f"PRIMARY KEY ({', '.join(map(_q, t.pk))}))")
        out += [f"ALTER TABLE {_q(t.name)} ADD COLUMN IF NOT EXISTS {column}" for column in columns]
        for ix in t.indexes:
            name = f"idx_{t.name}_{'_'.join(ix.columns)}"
            out.append(f"CREATE {'UNIQUE ' if ix.unique else ''}INDEX IF NOT EXISTS {_q(name)} ON {_q(t.name)} "
                       f"({', '.join(map(_q, ix.columns))})")
    return out
