"""What fieldgate.db's readers use: the CLI, the HTTP side (`gateway.http.reader`) and the pages read it
through `Queries`.

Read-only: `Queries` opens the store with readonly=True, so it never creates, migrates or writes
it, and refuses a missing file (or empty database) or one of another schema version. It is safe
beside the running gateway: SQLite in WAL mode (and PostgreSQL) reads while the bridge writes, and
each read sees what was last committed. The writer is `gateway.store.tables.Store`; the reads it makes too (an
order, a shop, a conversation, …) are `Tables`', which both share.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.core.lifecycle import OrderRecord
from gateway.core.models import Shop
from gateway.store.database import Location
from gateway.store.tables import _FINAL_SQL, _RECORD_COLUMNS, _SHOP_COLUMNS, Delivery, Tables, _iso, _record, _shop

#: The sources of `Queries.feed`: (table, id column, time column, what a row says, its courier).
_FEED = {
    "event": ("order_events", "id", "at", "x.kind, x.status, x.actor, x.reason",
              "COALESCE(x.courier_id, o.courier_id)"),
    "rejection": ("dead_letters", "id", "received_at", "x.topic, x.reason", "o.courier_id"),
    "notice": ("notices", "rowid", "created_at", "x.kind, x.text, x.deferred_until", "o.courier_id"),
}
#: When an order reached its status (rows written before status_since existed: their last change).
_SINCE = "COALESCE(status_since, updated_at)"


@dataclass(frozen=True)
class StoreFigures:
    """What fieldgate.db says at a metrics scrape (`gateway.metrics`)."""

    orders_by_status: dict[str, int]
    couriers_online: int
    outbox: int
    webhook_backlog: int
    oldest_webhook: str | None  # ISO time the oldest waiting delivery was made


class Queries(Tables):
    """fieldgate.db, read-only. Not thread-safe: one Queries per thread (the HTTP side's threads take turns with
    one: `gateway.http.reader.Reader`)."""

    def __init__(self, location: Location) -> None:
        super().__init__(location, readonly=True)

    # ------------------------------------------------------------------ the registry: shops and couriers

    def shops(self) -> list[Shop]:
        return [_shop(row) for row in self.conn.execute(f"SELECT {_SHOP_COLUMNS} FROM shops ORDER BY shop_id")]

    def couriers_of_shop(self, shop_id: str) -> set[str]:
        """The couriers registered to ride for a shop, and those on its active orders."""
        rows = self.conn.execute(
            "SELECT courier_id FROM courier_shops WHERE shop_id = ? UNION SELECT courier_id FROM orders "
            f"WHERE shop_id = ? AND courier_id IS NOT NULL AND status NOT IN {_FINAL_SQL}", (shop_id, shop_id))
        return {row[0] for row in rows}

    # ------------------------------------------------------------------ customers: notices and conversations

    def notices_of(self, order_id: str) -> list[dict[str, Any]]:
        return self.query(
            "SELECT notice_id, kind, text, locale, urgent, created_at, deferred_until, sent_at, dropped_at "
            "FROM notices WHERE order_id = ? ORDER BY created_at", [order_id])

    def chat_reads(self, order_id: str) -> list[dict[str, Any]]:
        return self.query("SELECT role, reader_id, read_up_to, at FROM chat_reads WHERE order_id = ? "
                          "ORDER BY role, reader_id", [order_id])

    # ------------------------------------------------------------------ webhooks (the HTTP outbox) and metrics

    def webhooks(self) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT w.endpoint_id, w.url, w.events, w.secret, w.enabled, w.created_at, w.disabled_reason, "
            "(SELECT COUNT(*) FROM webhook_deliveries d WHERE d.endpoint_id = w.endpoint_id AND d.state = 'pending') "
            " AS pending, "
            "(SELECT COUNT(*) FROM webhook_deliveries d WHERE d.endpoint_id = w.endpoint_id AND d.state IN "
            " ('failed', 'gave_up')) AS failed FROM webhooks w ORDER BY w.created_at")
        for row in rows:
            row["events"] = row["events"].split(",")
            row["enabled"] = bool(row["enabled"])
        return rows

    def due_deliveries(self, now: datetime, busy: Iterable[int], limit: int = 200) -> list[Delivery]:
        """Deliveries to send now: for each endpoint and order, only the oldest pending one (so an order's events
        arrive in order), if it is due and not being sent already (`busy`)."""
        skip = list(busy)
        not_busy = f"AND d.id NOT IN ({', '.join('?' * len(skip))}) " if skip else ""
        rows = self.conn.execute(
            "SELECT d.id, d.endpoint_id, d.webhook_id, d.payload, d.attempts, d.created_at, w.url, w.secret "
            "FROM webhook_deliveries d JOIN webhooks w ON w.endpoint_id = d.endpoint_id AND w.enabled = 1 "
            "WHERE d.state = 'pending' AND d.next_attempt_at <= ? AND d.id = ("
            " SELECT MIN(e.id) FROM webhook_deliveries e WHERE e.endpoint_id = d.endpoint_id AND e.state = 'pending'"
            " AND e.order_id IS NOT DISTINCT FROM d.order_id) "
            f"{not_busy}ORDER BY d.id LIMIT ?",
            [_iso(now), *skip, limit]).fetchall()
        return [Delivery(*row[:5], datetime.fromisoformat(row[5]), *row[6:]) for row in rows]

    def deliveries(self, *, failed_only: bool = False, limit: int = 50) -> list[dict[str, Any]]:
        """The newest deliveries (or only those failed or given up), newest first."""
        where = "WHERE state IN ('failed', 'gave_up')" if failed_only else ""
        return self.query(
            "SELECT id, endpoint_id, webhook_id, event, order_id, state, attempts, last_status, last_error, "
            f"created_at, next_attempt_at, delivered_at FROM webhook_deliveries {where} ORDER BY id DESC LIMIT ?",
            [limit])

    def gauges(self) -> StoreFigures:
        """The figures a metrics scrape reads (cheap: no count over fixes or events)."""
        count, oldest = self.conn.execute(
            "SELECT COUNT(*), MIN(created_at) FROM webhook_deliveries WHERE state = 'pending'").fetchone()
        return StoreFigures(
            orders_by_status=dict(self.conn.execute("SELECT status, COUNT(*) FROM orders GROUP BY status").fetchall()),
            couriers_online=self.conn.execute("SELECT COUNT(*) FROM couriers WHERE online = 1").fetchone()[0],
            outbox=self.conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0],
            webhook_backlog=count, oldest_webhook=oldest)

    # ------------------------------------------------------------------ tracking links and the board

    def _with_since(self, where: str, params: tuple[Any, ...]) -> list[tuple[OrderRecord, datetime]]:
        """Orders with the time each reached its status."""
        rows = self.conn.execute(
            f"SELECT {_RECORD_COLUMNS}, {_SINCE} AS since FROM orders WHERE {where}",
            params).fetchall()
        return [(_record(row[:-1]), datetime.fromisoformat(row[-1])) for row in rows]

    def tracked_order(self, digest: str) -> tuple[OrderRecord, datetime] | None:
        """The order a tracking link's digest names (not once its personal data is purged)."""
        found = self._with_since("order_id = (SELECT order_id FROM tracking WHERE digest = ?) AND purged = 0",
                                 (digest,))
        return found[0] if found else None

    def board(self, shop_id: str, done_since: datetime, limit: int = 500) -> list[tuple[OrderRecord, datetime]]:
        """A shop's board: its active orders and those that ended since `done_since`, oldest status first."""
        return self._with_since(f"shop_id = ? AND (status NOT IN {_FINAL_SQL} OR {_SINCE} >= ?) ORDER BY since "
                                "LIMIT ?",
                                (shop_id, _iso(done_since), limit))

    def board_card(self, order_id: str) -> tuple[OrderRecord, datetime] | None:
        found = self._with_since("order_id = ?", (order_id,))
        return found[0] if found else None

    def rated(self, order_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM ratings WHERE order_id = ?", (order_id,)).fetchone() is not None

    # ------------------------------------------------------------------ reads for operators

    def list_orders(
        self, *, status: str | None = None, shop_id: str | None = None, courier_id: str | None = None,
        limit: int = 50,
    ) -> tuple[list[dict[str, Any]], int]:
        """The newest-changed orders matching the filters (at most `limit`), and how many match in all."""
        where, params = [], []
        for column, value in (("status", status), ("shop_id", shop_id), ("courier_id", courier_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        rows = self.query(
            "SELECT order_id, shop_id, courier_id, status, created_at, updated_at, order_json FROM orders"
            f"{clause} ORDER BY updated_at DESC LIMIT ?", [*params, limit])
        total = self.conn.execute(f"SELECT COUNT(*) FROM orders{clause}", params).fetchone()[0]
        return rows, total

    def orders_page(
        self, *, status: str | None = None, shop_id: str | None = None, courier_id: str | None = None,
        after: tuple[str, str] | None = None, limit: int = 50,
    ) -> tuple[list[OrderRecord], tuple[str, str] | None]:
        """Orders matching the filters, newest first, from after the (created_at, order_id) of `after` (keyset
        pagination: stable while orders change); the key of the last one if there are more."""
        where, params = [], []
        for column, value in (("status", status), ("shop_id", shop_id), ("courier_id", courier_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if after is not None:
            where.append("(created_at, order_id) < (?, ?)")
            params += after
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        rows = self.conn.execute(
            f"SELECT {_RECORD_COLUMNS}, order_id FROM orders{clause} ORDER BY created_at DESC, order_id DESC LIMIT ?",
            [*params, limit + 1]).fetchall()
        records = [_record(row[:-1]) for row in rows[:limit]]
        more = len(rows) > limit
        return records, (_iso(records[-1].created_at), records[-1].order_id) if more else None

    def fixes(self, courier_id: str, start: float, end: float, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """A courier's fixes with start <= tst <= end (epoch seconds), oldest first, every device's; and whether
        there were more than `limit` (the first `limit` are returned)."""
        rows = self.query(
            "SELECT tst, lat, lon, acc, alt, vel, cog, batt, device FROM gps_fixes WHERE courier_id = ? "
            "AND tst BETWEEN ? AND ? ORDER BY tst, device LIMIT ?", [courier_id, start, end, limit + 1])
        return rows[:limit], len(rows) > limit

    def feed_heads(self) -> dict[str, int]:
        """The newest row id of each source of `feed`: follow from here."""
        return {source: self.conn.execute(f"SELECT COALESCE(MAX({key}), 0) FROM {table}").fetchone()[0]
                for source, (table, key, *_) in _FEED.items()}

    def feed(self, after: dict[str, int] | None, *, shop_id: str | None = None, courier_id: str | None = None,
             order_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """What happened — timeline entries, refused messages, customers' notices — matching the filters: the first
        `limit` of each source after the ids in `after`, or (after=None) the last `limit` of each; oldest first.
        A refused message matches a shop or courier whose order it names or whose topic it came on."""
        rows: list[dict[str, Any]] = []
        for source, (table, key, at, columns, courier) in _FEED.items():
            where, params = ([f"x.{key} > ?"], [after[source]]) if after is not None else ([], [])
            if order_id is not None:
                where.append("x.order_id = ?")
                params.append(order_id)
            if shop_id is not None:
                where.append("(o.shop_id = ?" + (" OR x.topic LIKE ?)" if source == "rejection" else ")"))
                params += [shop_id, f"shops/{shop_id}/%"] if source == "rejection" else [shop_id]
            if courier_id is not None:
                where.append(f"({courier} = ?" + (" OR x.topic LIKE ? OR x.topic LIKE ?)" if source == "rejection"
                                               else ")"))
                params += [courier_id, f"couriers/{courier_id}/%", f"owntracks/{courier_id}/%"] \
                    if source == "rejection" else [courier_id]
            clause = f" WHERE {' AND '.join(where)}" if where else ""
            found = self.query(
                f"SELECT '{source}' AS source, x.{key} AS id, x.{at} AS at, x.order_id, o.shop_id, {columns}, "
                f"{courier} AS courier "
                f"FROM {table} x LEFT JOIN orders o ON o.order_id = x.order_id{clause} "
                f"ORDER BY x.{key} {'ASC' if after is not None else 'DESC'} LIMIT ?", [*params, limit])
            rows += found if after is not None else found[::-1]
        return sorted(rows, key=lambda r: r["at"])

    def timeline(self, order_id: str) -> list[dict[str, Any]]:
        return self.query(
            "SELECT at, kind, status, actor, courier_id, reason, media_id FROM order_events WHERE order_id = ? "
            "ORDER BY id",
            [order_id])

    def events_since(self, order_id: str, after_id: int) -> list[dict[str, Any]]:
        return self.query(
            "SELECT id, at, kind, status, actor, courier_id, reason FROM order_events "
            "WHERE order_id = ? AND id > ? ORDER BY id",
            [order_id, after_id])

    def couriers(self, ids: Collection[str] | None = None) -> list[dict[str, Any]]:
        """Every courier the gateway knows of (or those of `ids`), with its devices, newest fix, active orders and
        unreceived tasks. `heard_from` is false for couriers that have tasks but never connected."""
        if ids is not None and not ids:
            return []
        only = "" if ids is None else f"WHERE c.courier_id IN ({', '.join('?' * len(ids))}) "
        return self.query(
            "SELECT c.courier_id, c.name, c.registered, c.max_active, c.online, c.last_seen_at, c.presence_at, "
            "c.fix_json, (SELECT GROUP_CONCAT(s.shop_id, ' ') FROM courier_shops s "
            " WHERE s.courier_id = c.courier_id) AS shops, "
            "CASE WHEN c.last_seen_at IS NOT NULL OR EXISTS (SELECT 1 FROM devices d WHERE d.courier_id = "
            "c.courier_id) THEN 1 ELSE 0 END AS heard_from, "
            "(SELECT GROUP_CONCAT(d.device || CASE d.online WHEN 1 THEN '' ELSE ' (off)' END, ', ') "
            " FROM devices d WHERE d.courier_id = c.courier_id) AS devices, "
            "(SELECT COUNT(*) FROM devices d WHERE d.courier_id = c.courier_id AND d.online = 1) "
            " AS devices_online, "
            "(SELECT COUNT(*) FROM orders o WHERE o.courier_id = c.courier_id "
            f" AND o.status NOT IN {_FINAL_SQL}) AS active_orders, "
            "(SELECT GROUP_CONCAT(o.order_id, ' ') FROM orders o WHERE o.courier_id = c.courier_id "
            f" AND o.status NOT IN {_FINAL_SQL}) AS active_ids, "
            "(SELECT COUNT(*) FROM tasks t WHERE t.courier_id = c.courier_id AND t.received_at IS NULL "
            " AND t.superseded = 0) AS unreceived_tasks "
            f"FROM couriers c {only}ORDER BY c.courier_id", list(ids or ()))

    def stats(self) -> dict[str, Any]:
        def counts(sql: str) -> dict[str, int]:
            return {row[0]: row[1] for row in self.conn.execute(sql)}

        one = lambda sql: self.conn.execute(sql).fetchone()[0]  # noqa: E731
        return {
            "orders": one("SELECT COUNT(*) FROM orders"),
            "orders_by_status": counts("SELECT status, COUNT(*) FROM orders GROUP BY status ORDER BY 2 DESC"),
            "events_by_kind": counts(
                "SELECT kind, COUNT(*) FROM order_events GROUP BY kind ORDER BY 2 DESC"
            ),
            "tasks": one("SELECT COUNT(*) FROM tasks"),
            "tasks_unreceived": one("SELECT COUNT(*) FROM tasks WHERE received_at IS NULL AND superseded = 0"),
            "task_resends": one("SELECT CAST(COALESCE(SUM(attempts - 1), 0) AS INTEGER) FROM tasks"),
            "couriers": one("SELECT COUNT(*) FROM couriers"),
            "couriers_online": one("SELECT COUNT(*) FROM couriers WHERE online = 1"),
            "gps_fixes": one("SELECT COUNT(*) FROM gps_fixes"),
            "dead_letters": one("SELECT COUNT(*) FROM dead_letters"),
            "dead_letters_by_topic": counts(
                "SELECT topic, COUNT(*) FROM dead_letters GROUP BY topic ORDER BY 2 DESC LIMIT 10"
            ),
            "outbox_pending": one("SELECT COUNT(*) FROM outbox"),
        }

    def performance(self) -> dict[str, list[dict[str, Any]]]:
        """How the deliveries went, per shop and per courier: delivered, on time (before the window's end, of those
        with a window), mean minutes from order to door, and the customers' stars."""
        rows = self.conn.execute(
            "SELECT o.shop_id, o.courier_id, o.created_at, json_extract(o.order_json, '$.window.end'), "
            "(SELECT MIN(e.at) FROM order_events e WHERE e.order_id = o.order_id AND e.kind = 'status' "
            " AND e.status = 'delivered'), r.stars "
            "FROM orders o LEFT JOIN ratings r ON r.order_id = o.order_id WHERE o.status = 'delivered'").fetchall()
        groups: dict[tuple[str, str], list[tuple[datetime, datetime | None, datetime, int | None]]] = {}
        for shop_id, courier_id, created, window_end, delivered, stars in rows:
            if delivered is None:
                continue
            entry = (datetime.fromisoformat(created), None if window_end is None else datetime.fromisoformat(
                window_end), datetime.fromisoformat(delivered), stars)
            groups.setdefault(("shop", shop_id), []).append(entry)
            if courier_id is not None:
                groups.setdefault(("courier", courier_id), []).append(entry)
        out: dict[str, list[dict[str, Any]]] = {"shops": [], "couriers": []}
        for (what, key), entries in sorted(groups.items()):
            windowed = [e for e in entries if e[1] is not None]
            stars = [e[3] for e in entries if e[3] is not None]
            out[f"{what}s"].append({
                f"{what}_id": key, "delivered": len(entries),
                "on_time_rate": round(sum(e[2] <= e[1] for e in windowed) / len(windowed), 3) if windowed else None,
                "mean_delivery_minutes": round(sum((e[2] - e[0]).total_seconds() for e in entries) / 60
                                               / len(entries), 1),
                "stars": round(sum(stars) / len(stars), 2) if stars else None, "ratings": len(stars),
            })
        return out

    def dead_letters(self, limit: int = 20) -> list[dict[str, Any]]:
        return self.query(
            "SELECT id, received_at, topic, size, reason, order_id FROM dead_letters ORDER BY id DESC LIMIT ?",
            [limit])
