"""fieldgate.db's schema, declared once (`gateway.store.schema`), made the same on SQLite and on PostgreSQL.

Each store is migrated for real (a SQLite file through `Store`, a database on a real PostgreSQL
server through the generated DDL) and then read back from the database's own catalogue, so the
two cannot drift from the declaration or from each other.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.store import schema
from gateway.store.tables import Store, db_path

#: Per table: its columns (name, python type, NOT NULL, default) in order, its primary key, its other indexes.
Shape = dict[str, tuple[list[tuple[str, type, bool, float | None]], tuple[str, ...], set[tuple[tuple[str, ...], bool]]]]

_SQLITE = {"TEXT": str, "INTEGER": int, "FLOAT": float, "REAL": float, "BLOB": bytes}
_POSTGRES = {"text": str, "bigint": int, "double precision": float, "bytea": bytes}


def _default(value: str | None) -> float | None:
    return None if value is None else float(value.split("::")[0].strip("'"))


def declared() -> Shape:
    return {t.name: ([(c.name, c.type, c.not_null or c.name in t.pk, c.default) for c in t.columns], t.pk,
                     {(ix.columns, ix.unique) for ix in t.indexes}) for t in schema.TABLES}


def sqlite_shape(path: Path) -> Shape:
    conn = sqlite3.connect(path)
    try:
        out: Shape = {}
        for t in schema.TABLES:
            info = conn.execute(f"PRAGMA table_info({t.name})").fetchall()
            columns = [(name, _SQLITE[kind], bool(notnull) or pk > 0, _default(default))
                       for _, name, kind, notnull, default, pk in info]
            pk = tuple(name for _, name, _, _, _, pk in sorted(info, key=lambda r: r[5]) if pk > 0)
            indexes = {(tuple(r[2] for r in conn.execute(f"PRAGMA index_info({name})")), bool(unique))
                       for _, name, unique, origin, _ in conn.execute(f"PRAGMA index_list({t.name})") if origin == "c"}
            out[t.name] = (columns, pk, indexes)
        return out
    finally:
        conn.close()


def postgres_shape(conn: psycopg.Connection[Any]) -> Shape:
    out: Shape = {}
    for t in schema.TABLES:
        columns = [(name, _POSTGRES[kind], nullable == "NO", _default(default))
                   for name, kind, nullable, default in conn.execute(
                       "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns "
                       "WHERE table_name = %s AND column_name != 'rowid' ORDER BY ordinal_position", (t.name,))]
        indexes: dict[str, tuple[tuple[str, ...], bool, bool]] = {}
        for index, column, unique, primary in conn.execute(
                "SELECT i.relname, a.attname, x.indisunique, x.indisprimary FROM pg_index x "
                "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class r ON r.oid = x.indrelid "
                "CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, n) "
                "JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum = k.attnum "
                "WHERE r.relname = %s ORDER BY i.relname, k.n", (t.name,)):
            cols, _, _ = indexes.get(index, ((), unique, primary))
            indexes[index] = ((*cols, column), unique, primary)
        [pk] = [cols for cols, _, primary in indexes.values() if primary]
        out[t.name] = (columns, pk, {(cols, unique) for cols, unique, primary in indexes.values() if not primary})
    return out


def migrate_postgres(url: str, ddl: list[str]) -> None:
    with psycopg.connect(url) as conn, conn.transaction():
        for statement in ddl:
            conn.execute(statement)  # type: ignore[arg-type]  # our own DDL, not user input


def test_a_new_sqlite_file_has_the_declared_tables_columns_and_indexes(tmp_path: Path) -> None:
    Store(db_path(tmp_path)).close()
    assert sqlite_shape(db_path(tmp_path)) == declared()


def test_a_new_postgresql_database_has_the_same_tables_columns_and_indexes(postgres_url: str, tmp_path: Path) -> None:
    migrate_postgres(postgres_url, schema.postgres_ddl())
    migrate_postgres(postgres_url, schema.postgres_ddl())  # a second start changes nothing
    Store(db_path(tmp_path)).close()
    with psycopg.connect(postgres_url) as conn:
        assert postgres_shape(conn) == declared() == sqlite_shape(db_path(tmp_path))
        # A single integer key is given by the database when an insert leaves it out, as SQLite's rowid is.
        conn.execute("INSERT INTO outbox (topic, payload, retain, created_at) VALUES ('t', 'x', 0, 'now'), "
                     "('t', 'y', 0, 'now')")
        assert [r[0] for r in conn.execute("SELECT id FROM outbox ORDER BY id")] == [1, 2]


@pytest.mark.parametrize("table", ["orders", "couriers"])
def test_a_postgresql_database_of_an_older_schema_gets_the_columns_it_lacks(postgres_url: str, table: str) -> None:
    older = tuple(t if t.name != table else schema.Table(t.name, t.pk, t.columns[:-3], t.indexes[:1])
                  for t in schema.TABLES)
    migrate_postgres(postgres_url, schema.postgres_ddl(older))
    with psycopg.connect(postgres_url) as conn:
        assert postgres_shape(conn) != declared()
    migrate_postgres(postgres_url, schema.postgres_ddl())
    with psycopg.connect(postgres_url) as conn:
        assert postgres_shape(conn) == declared()
