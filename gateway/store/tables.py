"""The store: `Store` is the one writer of fieldgate's tables.

The tables live in `<data_dir>/fieldgate.db`, a SQLite file in WAL mode so its readers
(`gateway.store.queries`: the CLI, the HTTP side, the pages) read while the gateway writes; or,
with `storage.url`, in a PostgreSQL database several bridges share (`gateway.store.database`).

    table          one row per                          written by
    orders         order (latest snapshot)              put_order
    order_events   timeline entry of an order           add_happenings, add_rejection_event
    tasks          task sent to a courier               add_task, receive_tasks, reschedule_task
    shops          registered shop                      put_shop
    couriers       courier (registration, presence,     put_courier, unregister_courier, touch_courier,
                   newest fix, speed)                   set_courier_online, set_fix
    courier_shops  (courier, shop) it rides for         put_courier, unregister_courier
    devices        device (connection) of a courier     set_device, reset_connection_devices
    gps_fixes      GPS fix received                     add_fixes
    dead_letters   inbound message refused              add_dead_letter
    outbox         outbound message not yet PUBACKed    enqueue, adopt_outbox, delete_outbox
    commands       operator command from the CLI        submit_command, finish_command
    notices        notice for a customer (sent, waiting add_notice, drop_waiting_notices, mark_notice_sent
                   for quiet hours' end, or dropped)
    chat_messages  message of an order's conversation   add_chat
    chat_reads     how far a participant has read       set_read
    media          uploaded file (the bytes are in      add_media
                   gateway/store/media.py's files)
    ratings        a customer's rating of an order      add_rating
    meta           schema version                       the migration (gateway.store.database)
    users          broker user (hashed password)        gateway/store/users.py (Users), on this connection
    tokens         HTTP bearer token (its sha256)       gateway/store/users.py (Tokens), on this connection
    webhooks       webhook endpoint                     add_webhook, remove_webhook, set_webhook_enabled,
                                                        record_delivery (a 410 disables it)
    webhook_       delivery of one event to one         add_deliveries (in the transaction that made the
      deliveries   endpoint                             event), record_delivery, retry_delivery
    idempotency    answered HTTP request, by its key    save_idempotent

Writers call methods inside `transaction()`; nothing here commits on its own, so one inbound
message (or one batch) is all-or-nothing. The schema is `gateway.store.schema`'s; writes are
plain SQL that both engines read (`gateway.store.postgres` lists the few rewrites), on the
connection of the caller's transaction. `Tables`, the base of `Store` and of the readers' `Queries`, holds the
reads both make, and the row converters and SQL pieces `gateway.store.queries` imports from here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from gateway.core.assignment import Candidate
from gateway.core.eta import Speed
from gateway.core.lifecycle import FINAL, CourierRef, Dispatch, Happening, OrderRecord, Outgoing, Tracking
from gateway.core.models import (
    ChatMessage,
    Courier,
    Fix,
    Location,
    Notice,
    Order,
    Participant,
    Shop,
    Status,
)
from gateway.core.webhooks import State, Verdict, event_of
from gateway.store.database import DB_NAME, open_database
from gateway.store.database import Location as Where
from gateway.store.media import MediaFiles
from gateway.store.users import Tokens, Users

PURGED = "[purged]"


def db_path(data_dir: Path) -> Path:
    return data_dir / DB_NAME


_CHAT_COLUMNS = "order_id, seq, msg_id, role, sender_id, sender_name, kind, text, lat, lon, media_id, at"


def _chat(row: tuple[Any, ...]) -> ChatMessage:
    order_id, seq, msg_id, role, sender_id, sender_name, kind, text, lat, lon, media_id, at = row
    return ChatMessage(seq=seq, msg_id=msg_id, order_id=order_id,
                       sender=Participant(role=role, id=sender_id, name=sender_name), kind=kind, text=text, lat=lat,
                       lon=lon, media_id=media_id, at=datetime.fromisoformat(at))


_SHOP_COLUMNS = ("shop_id, name, lat, lon, assignment, default_courier, timezone, locale, arrival_radius_m, "
                 "quiet_hours, require_proof")


def _shop(row: tuple[Any, ...]) -> Shop:
    return Shop(**dict(zip(_SHOP_COLUMNS.split(", "), row, strict=True)))


#: Final statuses in SQL, from the lifecycle's FINAL (never spelled out twice).
_FINAL_SQL = "(" + ", ".join(f"'{s.value}'" for s in sorted(FINAL)) + ")"
_RECORD_COLUMNS = ("order_json, status, progress, courier_id, location_json, created_at, updated_at, tracking_json, "
                   "dispatch_json, (SELECT name FROM couriers c WHERE c.courier_id = orders.courier_id)")


@lru_cache(maxsize=256)  # a batch stamps many rows with the same few times
def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds")


def json_time(iso: str) -> str:
    """An ISO 8601 time (`datetime.isoformat`) as pydantic writes it in JSON: UTC as Z."""
    return iso[:-6] + "Z" if iso.endswith("+00:00") else iso


@dataclass(frozen=True)
class Delivery:
    """A webhook delivery to make: the body for one endpoint."""

    id: int
    endpoint_id: str
    webhook_id: str
    payload: bytes
    attempts: int
    created_at: datetime
    url: str
    secret: str


@dataclass(frozen=True)
class TaskChange:
    """A task a receipt moved on: now delivered to the courier's phone, or read on it."""

    msg_id: str
    order_id: str
    kind: str  # delivered_to_courier | read_by_courier
    waited: float  # seconds from the task's making to this receipt


@dataclass(frozen=True)
class DueTask:
    msg_id: str
    courier_id: str
    order_id: str
    payload: bytes
    attempts: int


class Tables:
    """fieldgate.db's tables, open for writing (`Store`) or read-only (`gateway.store.queries.Queries`), in a SQLite
    file or a PostgreSQL database (`gateway.store.database`): its `users` and `tokens`, and the reads both the
    writer and the readers make."""

    def __init__(self, location: Where, *, readonly: bool = False, synchronous: str = "FULL",
                 create: bool = True) -> None:
        self.database = open_database(location, readonly=readonly, synchronous=synchronous, create=create)
        self.conn = self.database.conn
        self.where = self.database.where
        self.directory = self.database.directory
        self.shared = self.database.shared
        self.users = Users(self.conn)
        self.tokens = Tokens(self.conn)

    def query(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return self.database.query(sql, params)

    def leads(self, name: str) -> bool:
        """Does this process do the work named `name` for every bridge on the store (`Database.leads`)?"""
        return self.database.leads(name)

    def close(self) -> None:
        self.database.close()

    def get_order(self, order_id: str) -> OrderRecord | None:
        row = self.conn.execute(
            f"SELECT {_RECORD_COLUMNS} FROM orders WHERE order_id = ?",
            (order_id,),
        ).fetchone()
        return None if row is None else _record(row)

    def get_shop(self, shop_id: str) -> Shop | None:
        row = self.conn.execute(f"SELECT {_SHOP_COLUMNS} FROM shops WHERE shop_id = ?", (shop_id,)).fetchone()
        return None if row is None else _shop(row)

    def candidates(self, shop_id: str, default_max_active: int) -> list[Candidate]:
        """The shop's registered couriers, with what nearest-idle assignment looks at."""
        rows = self.conn.execute(
            "SELECT c.courier_id, COALESCE(c.online, 0), c.fix_json, COALESCE(c.max_active, ?), "
            "(SELECT COUNT(*) FROM orders o WHERE o.courier_id = c.courier_id "
            f" AND o.status NOT IN {_FINAL_SQL}) "
            "FROM courier_shops s JOIN couriers c ON c.courier_id = s.courier_id AND c.registered = 1 "
            "WHERE s.shop_id = ? ORDER BY c.courier_id",
            (default_max_active, shop_id),
        ).fetchall()
        out = []
        for courier_id, online, fix_json, max_active, active in rows:
            fix = None if fix_json is None else Fix.model_validate_json(fix_json)
            out.append(Candidate(courier_id, bool(online), fix and fix.lat, fix and fix.lon, fix and fix.tst, active,
                                 max_active))
        return out

    def chat_page(self, order_id: str, after_seq: int = 0, limit: int = 100) -> tuple[list[ChatMessage], bool]:
        rows = self.conn.execute(
            f"SELECT {_CHAT_COLUMNS} FROM chat_messages WHERE order_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (order_id, after_seq, limit + 1)).fetchall()
        return [_chat(r) for r in rows[:limit]], len(rows) > limit

    def media(self, media_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT media_id, order_id, role, uploader_id, kind, content_type, size, sha256, "
                          "created_at FROM media WHERE media_id = ?", [media_id])
        return rows[0] if rows else None

    def media_shas(self) -> set[str]:
        return {row[0] for row in self.conn.execute("SELECT DISTINCT sha256 FROM media")}


class Store(Tables):
    """fieldgate.db, for writing. Not thread-safe: one Store per thread.

    On PostgreSQL several bridges write at once: reading an order (or a courier's speed) to change it holds it
    (`Database.lock`) until the transaction ends, so another instance handling the same order waits for this one's
    commit and reads what it wrote."""

    def __init__(self, location: Where, *, synchronous: str = "FULL", create: bool = True) -> None:
        super().__init__(location, synchronous=synchronous, create=create)
        self._savepoint = self.database.savepoint()  # one serves every message

    # ------------------------------------------------------------------ transactions

    def transaction(self) -> AbstractContextManager[Any]:
        """BEGIN … COMMIT; rolls back if the block raises."""
        return self.database.transaction()

    def savepoint(self) -> AbstractContextManager[None]:
        """A nested all-or-nothing step inside `transaction()`."""
        return self._savepoint

    # ------------------------------------------------------------------ orders

    def get_order(self, order_id: str) -> OrderRecord | None:
        self.database.lock(f"order:{order_id}")
        return super().get_order(order_id)

    def active_orders_of(self, courier_id: str) -> list[OrderRecord]:
        rows = self.conn.execute(
            f"SELECT {_RECORD_COLUMNS} FROM orders WHERE courier_id = ? AND status NOT IN {_FINAL_SQL}",
            (courier_id,),
        ).fetchall()
        return [_record(row) for row in rows]

    def courier_orders(self, courier_id: str) -> list[dict[str, Any]]:
        """A courier's active orders as its phones list them, each the JSON object of a `CourierOrder`: read straight
        from the columns, no order parsed and no model built (this runs for every batch that touched the courier)."""
        rows = self.conn.execute(
            "SELECT order_id, status, json_extract(order_json, '$.address.text'), json_extract(order_json, "
            "'$.window'), CAST(json_extract(tracking_json, '$.eta_seconds') AS INTEGER), "
            "json_extract(tracking_json, '$.eta_at') "
            f"FROM orders WHERE courier_id = ? AND status NOT IN {_FINAL_SQL} ORDER BY created_at, order_id",
            (courier_id,))
        return [{"order_id": order_id, "status": status, "address": address,
                 "window": None if window is None else json.loads(window), "eta_seconds": eta_seconds,
                 "eta_at": None if eta_at is None else json_time(eta_at)}
                for order_id, status, address, window, eta_seconds, eta_at in rows]

    def put_order(self, record: OrderRecord) -> None:
        d = record.dispatch
        self.conn.execute(
            "INSERT INTO orders (order_id, shop_id, courier_id, status, progress, order_json, location_json, "
            "created_at, updated_at, tracking_json, dispatch_json, waiting_since, change_since, status_since) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(order_id) DO UPDATE SET "
            "status_since = CASE WHEN orders.status = excluded.status THEN orders.status_since "
            "ELSE excluded.status_since END, "
            "courier_id = excluded.courier_id, status = excluded.status, progress = excluded.progress, "
            "order_json = excluded.order_json, location_json = excluded.location_json, "
            "updated_at = excluded.updated_at, tracking_json = excluded.tracking_json, "
            "dispatch_json = excluded.dispatch_json, waiting_since = excluded.waiting_since, "
            "change_since = excluded.change_since",
            (
                record.order_id,
                record.order.shop_id,
                record.courier_id,
                record.status.value,
                record.progress.value,
                record.order.model_dump_json(),
                None if record.location is None else record.location.model_dump_json(),
                _iso(record.created_at),
                _iso(record.updated_at),
                _to_json(record.tracking),
                _to_json(d),
                None if d.waiting_since is None or not record.active else _iso(d.waiting_since),
                None if d.change_since is None or d.change_alerted or not record.active else _iso(d.change_since),
                _iso(record.updated_at),
            ),
        )
        if record.courier_id is not None:
            self.conn.execute("INSERT INTO couriers (courier_id) VALUES (?) ON CONFLICT DO NOTHING",
                              (record.courier_id,))

    def add_happenings(self, order_id: str, happenings: list[Happening], at: datetime) -> None:
        self.conn.executemany(
            "INSERT INTO order_events (order_id, at, kind, status, actor, courier_id, reason, media_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(order_id, _iso(at), h.kind, h.status.value, h.actor, h.courier_id, h.reason, h.media_id)
             for h in happenings],
        )

    def add_rejection_event(self, order_id: str, actor: str, reason: str, at: datetime) -> None:
        """Note a refused message on the timeline of the (existing) order it named."""
        self.conn.execute(
            "INSERT INTO order_events (order_id, at, kind, status, actor, reason) "
            "SELECT order_id, ?, 'rejected', status, ?, ? FROM orders WHERE order_id = ?",
            (_iso(at), actor, reason, order_id),
        )

    # ------------------------------------------------------------------ tasks

    def add_task(
        self, courier_id: str, msg_id: str, order_id: str, kind: str, payload: bytes, at: datetime,
        next_retry_at: float,
    ) -> None:
        """Store a new task; older unreceived tasks of the same order and courier are superseded."""
        self.conn.execute(
            "UPDATE tasks SET superseded = 1 WHERE order_id = ? AND courier_id = ? AND received_at IS NULL",
            (order_id, courier_id),
        )
        self.conn.execute(
            "INSERT INTO tasks (msg_id, courier_id, order_id, kind, payload, created_at, next_retry_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (msg_id, courier_id, order_id, kind, payload, _iso(at), next_retry_at),
        )

    def receive_tasks(
        self, courier_id: str, msg_ids: list[str], read: bool, at: datetime
    ) -> tuple[list[TaskChange], list[str]]:
        """Mark this courier's tasks received (and read). Returns (what changed, msg_ids it has no task with)."""
        changes: list[TaskChange] = []
        unknown: list[str] = []
        stamp = _iso(at)
        for msg_id in dict.fromkeys(msg_ids):
            row = self.conn.execute(
                "SELECT order_id, received_at, read_at, created_at FROM tasks WHERE msg_id = ? AND courier_id = ?",
                (msg_id, courier_id),
            ).fetchone()
            if row is None:
                unknown.append(msg_id)
                continue
            order_id, received_at, read_at, created_at = row
            waited = (at - datetime.fromisoformat(created_at)).total_seconds()
            if received_at is None:
                changes.append(TaskChange(msg_id, order_id, "delivered_to_courier", waited))
            if read and read_at is None:
                changes.append(TaskChange(msg_id, order_id, "read_by_courier", waited))
            self.conn.execute(
                "UPDATE tasks SET received_at = COALESCE(received_at, ?), "
                "read_at = CASE WHEN ? = 1 THEN COALESCE(read_at, ?) ELSE read_at END WHERE msg_id = ?",
                (stamp, read, stamp, msg_id),
            )
        return changes, unknown

    def order_of_task(self, courier_id: str, msg_id: str) -> OrderRecord | None:
        """The order of one of this courier's tasks (held to the commit, as `get_order` holds it)."""
        row = self.conn.execute("SELECT order_id FROM tasks WHERE msg_id = ? AND courier_id = ?",
                                (msg_id, courier_id)).fetchone()
        return None if row is None else self.get_order(row[0])

    def due_tasks(self, now: float, limit: int = 500) -> list[DueTask]:
        """Unreceived, current tasks whose retry time has come, for couriers known to be online."""
        rows = self.conn.execute(
            "SELECT t.msg_id, t.courier_id, t.order_id, t.payload, t.attempts FROM tasks t "
            "JOIN couriers c ON c.courier_id = t.courier_id AND c.online = 1 "
            "WHERE t.received_at IS NULL AND t.superseded = 0 AND t.next_retry_at <= ? "
            "ORDER BY t.next_retry_at LIMIT ?",
            (now, limit),
        ).fetchall()
        return [DueTask(*row) for row in rows]

    def reschedule_task(self, msg_id: str, next_retry_at: float) -> None:
        self.conn.execute(
            "UPDATE tasks SET attempts = attempts + 1, next_retry_at = ? WHERE msg_id = ?",
            (next_retry_at, msg_id),
        )

    # ------------------------------------------------------------------ couriers and GPS

    def touch_courier(self, courier_id: str, at: datetime) -> None:
        """Record that a courier was heard from (its presence is its devices', see set_courier_online)."""
        self.conn.execute(
            "INSERT INTO couriers (courier_id, last_seen_at) VALUES (?, ?) "
            "ON CONFLICT(courier_id) DO UPDATE SET last_seen_at = excluded.last_seen_at",
            (courier_id, _iso(at)),
        )

    def courier_online(self, courier_id: str) -> bool | None:
        """Whether the courier is online (None: never heard of, or no presence known)."""
        row = self.conn.execute("SELECT online FROM couriers WHERE courier_id = ?", (courier_id,)).fetchone()
        return None if row is None or row[0] is None else bool(row[0])

    def set_courier_online(self, courier_id: str, online: bool, at: datetime) -> None:
        """The courier's presence, as derived from its devices."""
        self.conn.execute(
            "INSERT INTO couriers (courier_id, online, presence_at) VALUES (?, ?, ?) ON CONFLICT(courier_id) "
            "DO UPDATE SET online = excluded.online, presence_at = excluded.presence_at",
            (courier_id, int(online), _iso(at)),
        )

    def set_device(self, courier_id: str, device: str, online: bool, how: str, source: str, at: datetime) -> None:
        """One of a courier's devices came or went (`source`: connection, or topic for presence topics)."""
        self.conn.execute(
            "INSERT INTO devices (courier_id, device, online, how, source, since) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (courier_id, device) DO UPDATE SET online = excluded.online, how = excluded.how, "
            "source = excluded.source, since = excluded.since",
            (courier_id, device, int(online), how, source, _iso(at)),
        )

    def any_device_online(self, courier_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM devices WHERE courier_id = ? AND online = 1 LIMIT 1",
                                 (courier_id,)).fetchone() is not None

    def reset_connection_devices(self, at: datetime) -> list[str]:
        """The embedded broker restarted: every connection-tracked device is offline. Returns their couriers."""
        couriers = [row[0] for row in self.conn.execute(
            "SELECT DISTINCT courier_id FROM devices WHERE source = 'connection' AND online = 1")]
        self.conn.execute("UPDATE devices SET online = 0, how = 'restart', since = ? "
                          "WHERE source = 'connection' AND online = 1", (_iso(at),))
        return couriers

    def courier_known(self, courier_id: str) -> bool:
        """Has the gateway ever known this courier: heard from it, seen a device of it, or got a user for it?"""
        return self.conn.execute(
            "SELECT 1 FROM couriers WHERE courier_id = ? AND (last_seen_at IS NOT NULL OR presence_at IS NOT NULL) "
            "UNION ALL SELECT 1 FROM devices WHERE courier_id = ? "
            "UNION ALL SELECT 1 FROM users WHERE role = 'courier' AND id = ? LIMIT 1",
            (courier_id, courier_id, courier_id),
        ).fetchone() is not None

    def courier_fix(self, courier_id: str) -> Fix | None:
        row = self.conn.execute("SELECT fix_json FROM couriers WHERE courier_id = ?", (courier_id,)).fetchone()
        return None if row is None or row[0] is None else Fix.model_validate_json(row[0])

    def set_fix(self, courier_id: str, fix: Fix, speed: Speed) -> None:
        """The courier's newest fix, and its speed as of that fix."""
        self.conn.execute(
            "UPDATE couriers SET fix_json = ?, fix_tst = ?, speed_kmh = ?, speed_samples = ? WHERE courier_id = ?",
            (fix.model_dump_json(), fix.tst, speed.kmh, speed.samples, courier_id),
        )

    def add_fixes(self, fixes: list[tuple[str, str, Location, datetime]]) -> None:
        """Store GPS fixes (courier, device, fix, received at) in one statement; a device's fix with a tst it already
        sent is a duplicate, not stored again."""
        self.conn.executemany(
            "INSERT INTO gps_fixes (courier_id, device, lat, lon, tst, acc, alt, vel, cog, batt, tid, "
            "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(courier_id, device, loc.lat, loc.lon, loc.tst, loc.acc, loc.alt, loc.vel, loc.cog, loc.batt, loc.tid,
              _iso(at)) for courier_id, device, loc, at in fixes],
        )

    # ------------------------------------------------------------------ the registry: shops and couriers

    def put_shop(self, shop: Shop, at: datetime) -> None:
        """Register a shop, or replace its registration."""
        self.conn.execute(
            "INSERT INTO shops (shop_id, name, lat, lon, assignment, default_courier, timezone, locale, "
            "arrival_radius_m, quiet_hours, require_proof, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(shop_id) DO UPDATE SET name = excluded.name, lat = excluded.lat, lon = excluded.lon, "
            "assignment = excluded.assignment, default_courier = excluded.default_courier, "
            "timezone = excluded.timezone, locale = excluded.locale, arrival_radius_m = excluded.arrival_radius_m, "
            "quiet_hours = excluded.quiet_hours, require_proof = excluded.require_proof, "
            "updated_at = excluded.updated_at",
            (shop.shop_id, shop.name, shop.lat, shop.lon, shop.assignment, shop.default_courier, shop.timezone,
             shop.locale, shop.arrival_radius_m, shop.quiet_hours, int(shop.require_proof), _iso(at), _iso(at)),
        )

    def put_courier(self, courier: Courier) -> None:
        """Register a courier (or replace its registration): its name, phone, load limit and shops."""
        self.conn.execute(
            "INSERT INTO couriers (courier_id, registered, name, phone, max_active) VALUES (?, 1, ?, ?, ?) "
            "ON CONFLICT(courier_id) DO UPDATE SET registered = 1, name = excluded.name, phone = excluded.phone, "
            "max_active = excluded.max_active",
            (courier.courier_id, courier.name, courier.phone, courier.max_active),
        )
        self.conn.execute("DELETE FROM courier_shops WHERE courier_id = ?", (courier.courier_id,))
        self.conn.executemany("INSERT INTO courier_shops (courier_id, shop_id) VALUES (?, ?)",
                              [(courier.courier_id, shop_id) for shop_id in dict.fromkeys(courier.shops)])

    def get_courier(self, courier_id: str) -> Courier | None:
        """A registered courier's registration."""
        row = self.conn.execute("SELECT name, phone, max_active FROM couriers WHERE courier_id = ? AND registered = 1",
                                (courier_id,)).fetchone()
        if row is None:
            return None
        shops = [r[0] for r in self.conn.execute(
            "SELECT shop_id FROM courier_shops WHERE courier_id = ? ORDER BY shop_id", (courier_id,))]
        return Courier(courier_id=courier_id, name=row[0], phone=row[1], max_active=row[2], shops=shops)

    def unregister_courier(self, courier_id: str) -> bool:
        """Forget a courier's registration (its history, presence and orders stay). False if it had none."""
        done = self.conn.execute("UPDATE couriers SET registered = 0, name = NULL, phone = NULL, max_active = NULL "
                                 "WHERE courier_id = ? AND registered = 1", (courier_id,)).rowcount
        self.conn.execute("DELETE FROM courier_shops WHERE courier_id = ?", (courier_id,))
        return bool(done)

    def courier_ref(self, courier_id: str) -> CourierRef:
        """A courier as an assignment names it: its registered name and phone, and whether it was ever known."""
        row = self.conn.execute("SELECT name, phone, registered FROM couriers WHERE courier_id = ?",
                                (courier_id,)).fetchone()
        name, phone, registered = row if row is not None else (None, None, 0)
        return CourierRef(courier_id, name=name, phone=phone,
                          known=bool(registered) or self.courier_known(courier_id))

    def shops_of(self, courier_id: str) -> list[str]:
        return [row[0] for row in self.conn.execute("SELECT shop_id FROM courier_shops WHERE courier_id = ?",
                                                    (courier_id,))]

    def speed(self, courier_id: str) -> Speed:
        """The courier's speed, held to the commit (the caller sets the next from it: `set_fix`)."""
        self.database.lock(f"courier:{courier_id}")
        row = self.conn.execute("SELECT speed_kmh, speed_samples FROM couriers WHERE courier_id = ?",
                                (courier_id,)).fetchone()
        return Speed() if row is None or not row[1] else Speed(row[0], row[1])

    # ------------------------------------------------------------------ what dispatch watches

    def waiting_orders(self, shop_ids: list[str] | None = None, limit: int = 500) -> list[OrderRecord]:
        """Active orders looking for a courier (or one to take over), oldest first; only these shops' if given."""
        where, params = "", []
        if shop_ids is not None:
            where = f" AND shop_id IN ({', '.join('?' * len(shop_ids))})"
            params = list(shop_ids)
        rows = self.conn.execute(
            f"SELECT {_RECORD_COLUMNS} FROM orders WHERE waiting_since IS NOT NULL{where} "
            "ORDER BY waiting_since LIMIT ?", (*params, limit)).fetchall()
        return [_record(row) for row in rows]

    def unconfirmed_changes(self, since_before: datetime, limit: int = 500) -> list[OrderRecord]:
        """Active orders whose courier has not confirmed a change made before `since_before` (not yet alerted)."""
        rows = self.conn.execute(
            f"SELECT {_RECORD_COLUMNS} FROM orders WHERE change_since IS NOT NULL AND change_since < ? "
            "ORDER BY change_since LIMIT ?", (_iso(since_before), limit)).fetchall()
        return [_record(row) for row in rows]

    def unaccepted_assignments(self, sent_before: datetime, limit: int = 500) -> list[tuple[str, str]]:
        """(order_id, courier_id) of assign tasks the gateway chose, still the order's, with no receipt since before
        `sent_before`."""
        return [(row[0], row[1]) for row in self.conn.execute(
            "SELECT t.order_id, t.courier_id FROM tasks t JOIN orders o ON o.order_id = t.order_id "
            "AND o.courier_id = t.courier_id "
            "WHERE t.kind = 'assign' AND t.received_at IS NULL AND t.superseded = 0 AND t.created_at < ? "
            f"AND o.status NOT IN {_FINAL_SQL} AND CAST(json_extract(o.dispatch_json, '$.auto') AS TEXT) "
            "IN ('1', 'true') "  # SQLite reads a JSON true as 1, PostgreSQL as 'true'
            "ORDER BY t.created_at LIMIT ?", (_iso(sent_before), limit))]

    # ------------------------------------------------------------------ shops' open orders, retained states

    def open_orders(self, shop_id: str, after: str | None, limit: int) -> tuple[list[OrderRecord], bool]:
        """The shop's orders that are not final, by order_id after `after`; and whether more follow."""
        rows = self.conn.execute(
            f"SELECT {_RECORD_COLUMNS} FROM orders WHERE shop_id = ? AND status NOT IN {_FINAL_SQL} AND order_id > ? "
            "ORDER BY order_id LIMIT ?",
            (shop_id, after or "", limit + 1),
        ).fetchall()
        return [_record(row) for row in rows[:limit]], len(rows) > limit

    def final_states_to_clear(self, ended_before: datetime, limit: int = 500) -> list[str]:
        """Orders final since before `ended_before` whose retained state is still set."""
        return [row[0] for row in self.conn.execute(
            f"SELECT order_id FROM orders WHERE status IN {_FINAL_SQL} AND state_cleared = 0 AND updated_at < ? "
            "ORDER BY updated_at LIMIT ?", (_iso(ended_before), limit))]

    def mark_states_cleared(self, order_ids: list[str]) -> None:
        self.conn.executemany("UPDATE orders SET state_cleared = 1 WHERE order_id = ?", [(i,) for i in order_ids])

    # ------------------------------------------------------------------ customers: notices

    def add_notice(self, notice: Notice, urgent: bool, deferred_until: datetime | None) -> None:
        """A notice made now: sent now (deferred_until None) or waiting for the end of the shop's quiet hours."""
        self.conn.execute(
            "INSERT INTO notices (notice_id, order_id, kind, text, locale, urgent, created_at, deferred_until, "
            "sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (notice.notice_id, notice.order_id, notice.kind, notice.text, notice.locale, int(urgent), _iso(notice.at),
             None if deferred_until is None else _iso(deferred_until),
             _iso(notice.at) if deferred_until is None else None),
        )

    def drop_waiting_notices(self, order_id: str, at: datetime) -> int:
        """A newer notice (or the order's end) makes the order's waiting ones obsolete."""
        return self.conn.execute(
            "UPDATE notices SET dropped_at = ? WHERE order_id = ? AND sent_at IS NULL AND dropped_at IS NULL",
            (_iso(at), order_id)).rowcount

    def due_notices(self, now: datetime, limit: int = 500) -> list[tuple[Notice, bool]]:
        """Waiting notices whose quiet hours have ended: (notice, urgent)."""
        rows = self.conn.execute(
            "SELECT notice_id, order_id, kind, text, locale, urgent, created_at FROM notices "
            "WHERE deferred_until IS NOT NULL AND deferred_until <= ? AND sent_at IS NULL AND dropped_at IS NULL "
            "ORDER BY deferred_until, created_at LIMIT ?", (_iso(now), limit)).fetchall()
        return [(Notice(notice_id=r[0], order_id=r[1], kind=r[2], text=r[3], locale=r[4], urgent=bool(r[5]),
                        deferred=True, at=datetime.fromisoformat(r[6])), bool(r[5])) for r in rows]

    def mark_notice(self, notice_id: str, at: datetime, *, sent: bool) -> None:
        column = "sent_at" if sent else "dropped_at"
        self.conn.execute(f"UPDATE notices SET {column} = ? WHERE notice_id = ?", (_iso(at), notice_id))

    # ------------------------------------------------------------------ customers: conversations

    def add_chat(self, order_id: str, msg_id: str, sender: Participant, kind: str, at: datetime, *,
                 text: str | None = None, lat: float | None = None, lon: float | None = None,
                 media_id: str | None = None) -> tuple[ChatMessage, bool]:
        """Append a message to the order's conversation; (the message, False) if this sender sent this msg_id
        before (the stored one is returned)."""
        row = self.conn.execute(
            f"SELECT {_CHAT_COLUMNS} FROM chat_messages WHERE order_id = ? AND role = ? AND sender_id = ? "
            "AND msg_id = ?", (order_id, sender.role, sender.id, msg_id)).fetchone()
        if row is not None:
            return _chat(row), False
        seq = self.conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM chat_messages WHERE order_id = ?",
                                (order_id,)).fetchone()[0]
        self.conn.execute(
            "INSERT INTO chat_messages (order_id, seq, msg_id, role, sender_id, sender_name, kind, text, lat, lon, "
            "media_id, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (order_id, seq, msg_id, sender.role, sender.id, sender.name, kind, text, lat, lon, media_id, _iso(at)))
        return ChatMessage(seq=seq, msg_id=msg_id, order_id=order_id, sender=sender, kind=kind, text=text, lat=lat,
                           lon=lon, media_id=media_id, at=at), True

    def set_read(self, order_id: str, reader: Participant, read_up_to: int, at: datetime) -> int | None:
        """Record that `reader` read the conversation up to `read_up_to` (capped at its last seq); the new mark, or
        None if it is not further than before."""
        last = self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM chat_messages WHERE order_id = ?",
                                 (order_id,)).fetchone()[0]
        mark = min(read_up_to, last)
        before = self.conn.execute(
            "SELECT read_up_to FROM chat_reads WHERE order_id = ? AND role = ? AND reader_id = ?",
            (order_id, reader.role, reader.id)).fetchone()
        if mark < 1 or (before is not None and before[0] >= mark):
            return None
        self.conn.execute("INSERT INTO chat_reads (order_id, role, reader_id, read_up_to, at) VALUES (?, ?, ?, ?, ?) "
                          "ON CONFLICT (order_id, role, reader_id) DO UPDATE SET read_up_to = excluded.read_up_to, "
                          "at = excluded.at",
                          (order_id, reader.role, reader.id, mark, _iso(at)))
        return mark

    def was_courier_of(self, order_id: str, courier_id: str) -> bool:
        """Was this courier ever assigned the order (an earlier courier reads its conversation, read-only)?"""
        return self.conn.execute(
            "SELECT 1 FROM order_events WHERE order_id = ? AND kind = 'assigned' AND courier_id = ? LIMIT 1",
            (order_id, courier_id)).fetchone() is not None

    # ------------------------------------------------------------------ customers: media and ratings

    def add_media(self, media_id: str, order_id: str, uploader: Participant, kind: str, content_type: str, size: int,
                  sha256: str, at: datetime) -> None:
        self.conn.execute(
            "INSERT INTO media (media_id, order_id, role, uploader_id, kind, content_type, size, sha256, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (media_id, order_id, uploader.role, uploader.id, kind, content_type, size, sha256, _iso(at)))

    def latest_media(self, order_id: str, kind: str) -> str | None:
        row = self.conn.execute("SELECT media_id FROM media WHERE order_id = ? AND kind = ? "
                                "ORDER BY created_at DESC, media_id LIMIT 1", (order_id, kind)).fetchone()
        return None if row is None else row[0]

    def add_rating(self, order_id: str, stars: int, comment: str | None, courier_id: str | None, shop_id: str,
                   at: datetime) -> bool:
        """Store a rating; False if the order was rated before."""
        cur = self.conn.execute("INSERT INTO ratings (order_id, stars, comment, courier_id, shop_id, at) "
                                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                                (order_id, stars, comment, courier_id, shop_id, _iso(at)))
        return cur.rowcount == 1

    # ------------------------------------------------------------------ webhooks (the HTTP outbox)

    def add_webhook(self, url: str, events: list[str], secret: str, at: datetime) -> str:
        endpoint_id = f"ep_{uuid.uuid4().hex[:10]}"
        self.conn.execute("INSERT INTO webhooks (endpoint_id, url, events, secret, enabled, created_at) "
                          "VALUES (?, ?, ?, ?, 1, ?)", (endpoint_id, url, ",".join(events), secret, _iso(at)))
        return endpoint_id

    def remove_webhook(self, endpoint_id: str) -> bool:
        self.conn.execute("DELETE FROM webhook_deliveries WHERE endpoint_id = ?", (endpoint_id,))
        return self.conn.execute("DELETE FROM webhooks WHERE endpoint_id = ?", (endpoint_id,)).rowcount == 1

    def set_webhook_enabled(self, endpoint_id: str, enabled: bool) -> bool:
        """Enable an endpoint (after a 410 disabled it), or disable it; False if there is no such endpoint."""
        return self.conn.execute("UPDATE webhooks SET enabled = ?, disabled_reason = NULL WHERE endpoint_id = ?",
                                 (int(enabled), endpoint_id)).rowcount == 1

    def add_deliveries(self, messages: list[Outgoing], at: datetime) -> int:
        """One delivery row per event an endpoint subscribes to, in the transaction that made the events (an endpoint
        disabled by a 410 gets them too: they wait for it to be enabled). The body is what the endpoint receives:
        {"type": event, "timestamp": …, "data": the message's payload}."""
        endpoints = self.conn.execute("SELECT endpoint_id, events FROM webhooks").fetchall()
        if not endpoints:
            return 0
        rows = []
        for m in messages:
            event = event_of(m.topic)
            if event is None:
                continue
            data = json.loads(m.payload)
            body = json.dumps({"type": event, "timestamp": _iso(at), "data": data}, ensure_ascii=False).encode()
            for endpoint_id, events in endpoints:
                if event in events.split(","):
                    rows.append((endpoint_id, f"msg_{uuid.uuid4().hex}", event, data.get("order_id"), body,
                                 _iso(at), _iso(at)))
        self.conn.executemany(
            "INSERT INTO webhook_deliveries (endpoint_id, webhook_id, event, order_id, payload, created_at, state, "
            "attempts, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?)", rows)
        return len(rows)

    def record_delivery(self, delivery: Delivery, verdict: Verdict, at: datetime, status: int | None,
                        error: str | None) -> None:
        """The outcome of one attempt (`gateway.core.webhooks.judge`); a 410 disables the endpoint."""
        self.conn.execute(
            "UPDATE webhook_deliveries SET state = ?, attempts = attempts + 1, last_status = ?, last_error = ?, "
            "next_attempt_at = COALESCE(?, next_attempt_at), delivered_at = ? WHERE id = ?",
            (verdict.state, status, error, None if verdict.next_attempt_at is None else _iso(verdict.next_attempt_at),
             _iso(at) if verdict.state == State.delivered else None, delivery.id))
        if verdict.disable_endpoint:
            self.conn.execute("UPDATE webhooks SET enabled = 0, disabled_reason = ? WHERE endpoint_id = ?",
                              (f"{error} at {_iso(at)}", delivery.endpoint_id))

    def retry_delivery(self, delivery_id: int, at: datetime) -> bool:
        """Send a failed (or given up) delivery again, as soon as possible, with the same webhook-id."""
        return self.conn.execute(
            "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = ? WHERE id = ? "
            "AND state IN ('failed', 'gave_up')", (_iso(at), delivery_id)).rowcount == 1

    # ------------------------------------------------------------------ HTTP idempotency keys

    def idempotent(self, user: str, key: str, since: datetime) -> tuple[str, int, bytes] | None:
        """(request sha, status, body) answered to this user's key after `since`."""
        row = self.conn.execute("SELECT request_sha, status, body FROM idempotency WHERE \"user\" = ? AND key = ? "
                                "AND created_at > ?", (user, key, _iso(since))).fetchone()
        return None if row is None else (row[0], row[1], bytes(row[2]))

    def save_idempotent(self, user: str, key: str, request_sha: str, status: int, body: bytes, at: datetime,
                        forget_before: datetime) -> None:
        """Keep an answer under its key; forget the answers of keys older than `forget_before`."""
        self.conn.execute("DELETE FROM idempotency WHERE created_at < ?", (_iso(forget_before),))
        self.conn.execute('INSERT INTO idempotency ("user", key, request_sha, status, body, created_at) '
                          "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (\"user\", key) DO UPDATE SET "
                          "request_sha = excluded.request_sha, status = excluded.status, body = excluded.body, "
                          "created_at = excluded.created_at",
                          (user, key, request_sha, status, body, _iso(at)))

    # ------------------------------------------------------------------ operator commands (the CLI's inbox)

    def submit_command(self, payload: bytes, at: datetime) -> int:
        return self.conn.execute("INSERT INTO commands (submitted_at, payload, state) VALUES (?, ?, 'pending') "
                                 "RETURNING id", (_iso(at), payload)).fetchone()[0]

    def pending_commands(self, limit: int = 100) -> list[tuple[int, bytes]]:
        return [(row[0], bytes(row[1])) for row in self.conn.execute(
            "SELECT id, payload FROM commands WHERE state = 'pending' ORDER BY id LIMIT ?", (limit,))]

    def finish_command(self, command_id: int, state: str, at: datetime, reason: str = "", hint: str = "") -> None:
        """state: done (applied), unchanged (nothing to do) or rejected (with reason and hint)."""
        self.conn.execute("UPDATE commands SET state = ?, reason = ?, hint = ?, done_at = ? WHERE id = ?",
                          (state, reason, hint, _iso(at), command_id))

    def command(self, command_id: int) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT state, reason, hint FROM commands WHERE id = ?", (command_id,)).fetchone()
        return None if row is None else {"state": row[0], "reason": row[1], "hint": row[2]}

    # ------------------------------------------------------------------ dead letters

    def add_dead_letter(
        self, topic: str, payload: bytes, reason: str, hint: str, at: datetime, *, keep_bytes: int,
        order_id: str | None = None, msg_id: str | None = None,
    ) -> None:
        """Keep a refused message: its first `keep_bytes` bytes, its full size and why it was refused."""
        self.conn.execute(
            "INSERT INTO dead_letters (received_at, topic, payload, size, reason, hint, order_id, msg_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (_iso(at), topic, payload[:keep_bytes], len(payload), reason, hint, order_id, msg_id),
        )

    # ------------------------------------------------------------------ outbox

    def enqueue(self, messages: list[Outgoing], at: datetime) -> list[tuple[int, Outgoing]]:
        stamp = _iso(at)
        rows = []
        for m in messages:
            [outbox_id] = self.conn.execute(
                "INSERT INTO outbox (topic, payload, retain, created_at) VALUES (?, ?, ?, ?) RETURNING id",
                (m.topic, m.payload, int(m.retain), stamp),
            ).fetchone()
            rows.append((outbox_id, m))
        return rows

    def pending_outbox(self) -> list[tuple[int, Outgoing]]:
        rows = self.conn.execute("SELECT id, topic, payload, retain FROM outbox ORDER BY id").fetchall()
        return [(row[0], Outgoing(row[1], bytes(row[2]), bool(row[3]))) for row in rows]

    def adopt_outbox(self, older_than: datetime, now: datetime, held: set[int], limit: int = 500,
                     ) -> list[tuple[int, Outgoing]]:
        """Outbox rows made before `older_than` that this bridge does not hold: left by an instance that died (or by
        this one's previous run). Each is claimed by restamping it `now` — of two instances adopting at once, the
        second finds it restamped and leaves it — so it is published by one, and adopted again if that one dies."""
        rows = self.conn.execute("SELECT id, topic, payload, retain, created_at FROM outbox WHERE created_at < ? "
                                 "ORDER BY id LIMIT ?", (_iso(older_than), limit)).fetchall()
        adopted = []
        for outbox_id, topic, payload, retain, created_at in rows:
            if outbox_id in held:
                continue
            if self.conn.execute("UPDATE outbox SET created_at = ? WHERE id = ? AND created_at = ?",
                                 (_iso(now), outbox_id, created_at)).rowcount == 1:
                adopted.append((outbox_id, Outgoing(topic, bytes(payload), bool(retain))))
        return adopted

    def delete_outbox(self, ids: list[int]) -> None:
        self.conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    # ------------------------------------------------------------------ personal data

    def purge_personal_data(self, before: datetime, progress: Callable[[int, int], None] | None = None,
                            ) -> tuple[dict[str, int], set[str]]:
        """Remove personal data older than `before`: recipients, addresses and notes of orders that ended
        (delivered, failed, cancelled) before it, and of their tasks; their conversations, uploads and rating
        comments; raw payloads of dead letters and GPS fixes received before it. Order ids, statuses, timelines
        and stars stay for the statistics. Returns the counts and the media files no row names any more (the
        caller removes them once this has committed: `purge`)."""
        stamp = _iso(before)
        ended = [
            row[0] for row in self.conn.execute(
                f"SELECT order_json FROM orders WHERE status IN {_FINAL_SQL} "
                "AND updated_at < ? AND purged = 0", (stamp,))
        ]
        chats = media = 0
        shas: set[str] = set()
        for done, order_json in enumerate(ended, 1):
            order = Order.model_validate_json(order_json)
            scrubbed = order.model_copy(update={
                "recipient": order.recipient.model_copy(update={"name": PURGED, "phone": "000"}),
                "address": order.address.model_copy(update={"text": PURGED, "lat": None, "lon": None}),
                "notes": "",
            })
            self.conn.execute("UPDATE orders SET order_json = ?, location_json = NULL, purged = 1 WHERE order_id = ?",
                              (scrubbed.model_dump_json(), order.order_id))
            self.conn.execute("UPDATE tasks SET payload = ? WHERE order_id = ?",
                              (b'{"purged": true}', order.order_id))
            chats += self.conn.execute("DELETE FROM chat_messages WHERE order_id = ?", (order.order_id,)).rowcount
            self.conn.execute("DELETE FROM chat_reads WHERE order_id = ?", (order.order_id,))
            shas |= {row[0] for row in self.conn.execute("SELECT sha256 FROM media WHERE order_id = ?",
                                                         (order.order_id,))}
            media += self.conn.execute("DELETE FROM media WHERE order_id = ?", (order.order_id,)).rowcount
            self.conn.execute("UPDATE ratings SET comment = NULL WHERE order_id = ?", (order.order_id,))
            self.conn.execute("DELETE FROM tracking WHERE order_id = ?", (order.order_id,))
            if progress is not None and (done % 100 == 0 or done == len(ended)):
                progress(done, len(ended))
        dead = self.conn.execute("UPDATE dead_letters SET payload = NULL WHERE received_at < ? AND payload IS NOT NULL",
                                 (stamp,)).rowcount
        fixes = self.conn.execute("DELETE FROM gps_fixes WHERE received_at < ?", (stamp,)).rowcount
        webhooks = self.conn.execute("DELETE FROM webhook_deliveries WHERE created_at < ? AND state != 'pending'",
                                     (stamp,)).rowcount
        unnamed = shas - self.media_shas()
        counts = {"orders": len(ended), "chat_messages": chats, "media": media, "dead_letters": dead,
                  "gps_fixes": fixes, "webhook_deliveries": webhooks}
        return counts, unnamed

    # ------------------------------------------------------------------ tracking links

    def tracking_nonce(self, order_id: str) -> str | None:
        """The nonce of an order's tracking link (`gateway.core.tracking`), None if it has none (or was purged)."""
        row = self.conn.execute("SELECT nonce FROM tracking WHERE order_id = ?", (order_id,)).fetchone()
        return None if row is None else row[0]

    def add_tracking(self, order_id: str, nonce: str, digest: str, at: datetime) -> None:
        self.conn.execute("INSERT INTO tracking (order_id, nonce, digest, created_at) VALUES (?, ?, ?, ?)",
                          (order_id, nonce, digest, _iso(at)))


def _record(row: tuple[Any, ...]) -> OrderRecord:
    (order_json, status, progress, courier_id, location_json, created_at, updated_at, tracking_json, dispatch_json,
     courier_name) = row
    return OrderRecord(
        order=Order.model_validate_json(order_json),
        status=Status(status),
        progress=Status(progress),
        courier_id=courier_id,
        location=None if location_json is None else Fix.model_validate(json.loads(location_json)),
        created_at=datetime.fromisoformat(created_at),
        updated_at=datetime.fromisoformat(updated_at),
        tracking=_from_json(Tracking, tracking_json),
        dispatch=_from_json(Dispatch, dispatch_json),
        courier_name=courier_name,
    )


def _to_json(value: Tracking | Dispatch) -> str:
    """Its column: flat fields, so read one by one (`asdict` deep-copies every value; put_order runs per message)."""
    return json.dumps({f.name: v.isoformat() if isinstance(v := getattr(value, f.name), datetime) else v
                       for f in fields(value)})


T = TypeVar("T", Tracking, Dispatch)


def _from_json(kind: type[T], text: str | None) -> T:
    """A Tracking or Dispatch from its column (absent in rows written before it existed: the defaults)."""
    if not text:
        return kind()
    data = json.loads(text)
    for name, value in data.items():
        if isinstance(value, str) and name.endswith(("_at", "_since")):
            data[name] = datetime.fromisoformat(value)
        elif isinstance(value, list):
            data[name] = tuple(value)
    return kind(**data)


def purge(store: Store, data_dir: Path, before: datetime,
          progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """`Store.purge_personal_data` in one transaction, then the media files it left unnamed."""
    with store.transaction():
        counts, unnamed = store.purge_personal_data(before, progress)
    files = MediaFiles(data_dir)
    for sha in unnamed:
        files.remove(sha)
    return counts
