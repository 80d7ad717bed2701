"""The embedded broker's durable state: the only code that creates or writes broker.db.

    table          one row per                                      written when
    sessions       client session (persistent ones, and any         connect, disconnect, expiry
                   connected client with a will)
    subscriptions  (client, topic filter) of a persistent session   SUBSCRIBE / UNSUBSCRIBE
    messages       QoS>0 message some persistent session must get   PUBLISH (before its PUBACK); deleted
                                                                    once no queue row points at it
    queue          (client, message) not yet PUBACKed by the client PUBLISH; deleted on the client's PUBACK
                   (with the payload's size, for the queue bounds)
    retained       retained message per topic                       PUBLISH with retain
    meta           schema version

All writes arrive as one `Batch` per group commit from the broker's event loop
(`gateway.broker.engine.Engine`). With the gateway embedded (`bridge.in_process`), the bridge's
worker writes the batch on fieldgate.db's connection, with broker.db attached, in the same
transaction as the gateway's handling of the batch's inbound messages (`gateway.bridge.local`);
otherwise `BrokerStore.apply` writes it alone on the engine's writer thread.

At start only what every session needs at once is read (`BrokerStore.load`): sessions,
subscriptions, retained messages, and each session's queue as a count and a size. A session's
queued rows are read when the engine first needs them (`BrokerStore.shelf`: its client is back, or
a bound drops its oldest), so a restart with a million queued messages is ready in about a second.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.core.acl import Identity
from gateway.store import sqlite

DB_NAME = "broker.db"
SCHEMA_VERSION = 3


@dataclass
class SessionRow:
    client_id: str
    clean: bool
    connected: bool
    last_seen: float
    will: tuple[str, bytes, int, bool] | None  # topic, payload, qos, retain
    dropped: int = 0  # messages this client did not get because its queue was full
    denied: int = 0  # publishes and subscriptions the ACL or the limits refused
    off_contract: int = 0  # publishes to topics outside the topic contract


@dataclass
class Batch:
    """Everything one group commit writes. Ids are assigned by the engine before the commit."""

    messages: list[tuple[int, str, bytes, int]] = field(default_factory=list)  # id, topic, payload, qos
    queued: list[tuple[int, str, int, int, int]] = field(default_factory=list)  # id, client_id, message_id, qos,
    # payload size
    sent: list[tuple[int, int, int]] = field(default_factory=list)  # (phase, packet id, queue id) sent
    acked: list[int] = field(default_factory=list)  # queue ids done with (PUBACKed or dropped)
    #: message ids no queue row in memory needs any more (deleted unless a row not read yet still points at one)
    dead_messages: list[int] = field(default_factory=list)
    #: (client, id): delete the client's queue rows below that id, never read since the start (its session is gone)
    cleared: list[tuple[str, int]] = field(default_factory=list)
    retained: dict[str, tuple[bytes, int] | None] = field(default_factory=dict)  # None deletes
    sessions: dict[str, SessionRow | None] = field(default_factory=dict)  # None deletes the session row
    subscriptions: dict[tuple[str, str], int | None] = field(default_factory=dict)  # (client, filter) → qos/None
    #: For the embedded gateway, applied in the same transaction: the inbound messages it must handle (topic,
    #: payload, publisher's client id and identity) and the outbox rows of fieldgate.db this batch publishes.
    inbound: list[tuple[str, bytes, tuple[str, Identity] | None]] = field(default_factory=list)
    published: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(
            (self.messages, self.queued, self.sent, self.acked, self.dead_messages, self.cleared, self.retained,
             self.sessions, self.subscriptions, self.inbound, self.published)
        )


@dataclass
class Snapshot:
    """broker.db as loaded at start."""

    sessions: list[SessionRow]
    subscriptions: list[tuple[str, str, int]]
    shelves: list[tuple[str, int, int]]  # client, queued rows, their payloads' bytes (the rows are read later)
    retained: list[tuple[str, bytes, int]]
    next_message_id: int
    next_queue_id: int


def write(conn: sqlite3.Connection, batch: Batch, schema: str = "main") -> None:
    """Write one batch inside the caller's transaction; `schema` names broker.db on that connection (`main` on its
    own, `broker` where it is attached to fieldgate.db's).

    A queue row inserted and acknowledged within the same batch — a subscriber that PUBACKed
    before the commit — is never written at all, nor is a message no written queue row needs.
    """
    settled = set(batch.acked).intersection(q[0] for q in batch.queued)
    if settled:
        dead = set(batch.dead_messages)
        born_dead = {m[0] for m in batch.messages} & dead
        batch.queued = [q for q in batch.queued if q[0] not in settled]
        batch.sent = [s for s in batch.sent if s[2] not in settled]
        batch.acked = [a for a in batch.acked if a not in settled]
        batch.messages = [m for m in batch.messages if m[0] not in born_dead]
        batch.dead_messages = [d for d in batch.dead_messages if d not in born_dead]
    c, db = conn, schema
    for client_id, row in batch.sessions.items():
        if row is None:
            c.execute(f"DELETE FROM {db}.sessions WHERE client_id = ?", (client_id,))
        else:
            will = row.will or (None, None, None, None)
            c.execute(
                f"INSERT OR REPLACE INTO {db}.sessions (client_id, clean, connected, last_seen, will_topic, "
                "will_payload, will_qos, will_retain, dropped, denied, off_contract) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (client_id, int(row.clean), int(row.connected), row.last_seen, *will, row.dropped,
                 row.denied, row.off_contract),
            )
    for (client_id, topic_filter), qos in batch.subscriptions.items():
        if qos is None:
            c.execute(f"DELETE FROM {db}.subscriptions WHERE client_id = ? AND filter = ?", (client_id, topic_filter))
        else:
            c.execute(f"INSERT OR REPLACE INTO {db}.subscriptions VALUES (?, ?, ?)", (client_id, topic_filter, qos))
    c.executemany(f"INSERT INTO {db}.messages (id, topic, payload, qos) VALUES (?, ?, ?, ?)", batch.messages)
    c.executemany(f"INSERT INTO {db}.queue (id, client_id, message_id, qos, size) VALUES (?, ?, ?, ?, ?)",
                  batch.queued)
    c.executemany(f"UPDATE {db}.queue SET sent = ?, packet_id = ? WHERE id = ?", batch.sent)
    c.executemany(f"DELETE FROM {db}.queue WHERE id = ?", ((i,) for i in batch.acked))
    dead = list(batch.dead_messages)
    for client_id, below in batch.cleared:
        cleared = c.execute(f"DELETE FROM {db}.queue WHERE client_id = ? AND id < ? RETURNING message_id",
                            (client_id, below))
        dead += (message_id for (message_id,) in cleared.fetchall())
    c.executemany(f"DELETE FROM {db}.messages WHERE id = ? AND NOT EXISTS "
                  f"(SELECT 1 FROM {db}.queue WHERE message_id = ?)", ((i, i) for i in dead))
    for topic, value in batch.retained.items():
        if value is None:
            c.execute(f"DELETE FROM {db}.retained WHERE topic = ?", (topic,))
        else:
            c.execute(f"INSERT OR REPLACE INTO {db}.retained VALUES (?, ?, ?)", (topic, *value))


def attach(conn: sqlite3.Connection, data_dir: Path, synchronous: str) -> None:
    """Make broker.db's tables writable on another connection (fieldgate.db's) as `broker.<table>`, so that one
    transaction there writes both files: the embedded gateway's group commit (`gateway.bridge.local`)."""
    conn.execute("ATTACH DATABASE ? AS broker", (str(data_dir / DB_NAME),))
    conn.execute(f"PRAGMA broker.synchronous={synchronous}")


class BrokerStore(sqlite.SqliteFile):
    """broker.db. Used from one thread at a time (the engine's writer thread)."""

    SCHEMA_VERSION = SCHEMA_VERSION

    def _migrate(self) -> None:
        db = self.db
        db["sessions"].create(
            {"client_id": str, "clean": int, "connected": int, "last_seen": float, "will_topic": str,
             "will_payload": bytes, "will_qos": int, "will_retain": int, "dropped": int, "denied": int},
            pk="client_id", not_null={"clean", "connected", "last_seen"}, defaults={"dropped": 0, "denied": 0},
            if_not_exists=True,
        )
        sqlite.add_missing_columns(db, "sessions", {"off_contract": ("INTEGER", 0)})
        db["subscriptions"].create(
            {"client_id": str, "filter": str, "qos": int}, pk=("client_id", "filter"), not_null={"qos"},
            if_not_exists=True,
        )
        db["messages"].create(
            {"id": int, "topic": str, "payload": bytes, "qos": int}, pk="id", not_null={"topic", "payload", "qos"},
            if_not_exists=True,
        )
        db["queue"].create(
            {"id": int, "client_id": str, "message_id": int, "qos": int, "sent": int, "packet_id": int, "size": int},
            pk="id", not_null={"client_id", "message_id", "qos"}, defaults={"sent": 0}, if_not_exists=True,
        )
        if "size" not in db["queue"].columns_dict:  # schema 2: the size is the message's payload's
            sqlite.add_missing_columns(db, "queue", {"size": ("INTEGER", 0)})
            self.conn.execute("UPDATE queue SET size = (SELECT LENGTH(payload) FROM messages WHERE id = message_id)")
        # One client's rows in order, and each client's count and size at start without reading the table.
        db["queue"].create_index(["client_id", "id", "size"], if_not_exists=True)
        self.conn.execute("DROP INDEX IF EXISTS idx_queue_client_id_id")  # schema 2's, without the size
        db["queue"].create_index(["message_id"], if_not_exists=True)  # is a message still needed?
        db["retained"].create(
            {"topic": str, "payload": bytes, "qos": int}, pk="topic", not_null={"payload", "qos"}, if_not_exists=True,
        )

    # ------------------------------------------------------------------ write path

    def apply(self, batch: Batch) -> None:
        """Write one batch in its own transaction (the group commit of a broker without the gateway in it)."""
        with sqlite.transaction(self.conn):
            write(self.conn, batch)

    # ------------------------------------------------------------------ start-up

    def load(self) -> Snapshot:
        c = self.conn
        sessions = [
            SessionRow(cid, bool(clean), bool(conn), seen,
                       (wt, bytes(wp), wq, bool(wr)) if wt is not None else None, dropped or 0, denied or 0,
                       off or 0)
            for cid, clean, conn, seen, wt, wp, wq, wr, dropped, denied, off in c.execute(
                "SELECT client_id, clean, connected, last_seen, will_topic, will_payload, will_qos, will_retain, "
                "dropped, denied, off_contract FROM sessions"
            )
        ]
        return Snapshot(
            sessions=sessions,
            subscriptions=list(c.execute("SELECT client_id, filter, qos FROM subscriptions")),
            shelves=list(c.execute("SELECT client_id, COUNT(*), COALESCE(SUM(size), 0) FROM queue GROUP BY client_id")),
            retained=[(t, bytes(p), q) for t, p, q in c.execute("SELECT topic, payload, qos FROM retained")],
            next_message_id=(c.execute("SELECT MAX(id) FROM messages").fetchone()[0] or 0) + 1,
            next_queue_id=(c.execute("SELECT MAX(id) FROM queue").fetchone()[0] or 0) + 1,
        )

    def shelf(self, client_id: str, below: int) -> list[tuple[int, int, int, int, int | None, str, bytes, int]]:
        """One client's queued rows with ids below `below`, oldest first: queue id, message id, qos, phase sent (0 not
        yet, 1 PUBLISH, 2 PUBREL), packet id, topic, payload, message qos. Read on a connection of its own (from the
        engine's loop, while its writer commits): these rows were committed before the engine started and nothing
        changes them until they are read."""
        conn = sqlite.connect(self.path, readonly=True)
        try:
            return [(qid, mid, qos, sent or 0, pid, topic, bytes(payload), mqos)
                    for qid, mid, qos, sent, pid, topic, payload, mqos in conn.execute(
                        "SELECT q.id, q.message_id, q.qos, q.sent, q.packet_id, m.topic, m.payload, m.qos "
                        "FROM queue q JOIN messages m ON m.id = q.message_id WHERE q.client_id = ? AND q.id < ? "
                        "ORDER BY q.id", (client_id, below))]
        finally:
            conn.close()

    # ------------------------------------------------------------------ operators

    def sessions_report(self) -> list[dict[str, Any]]:
        return list(
            self.db.query(
                "SELECT s.client_id, s.clean, s.connected, s.last_seen, s.dropped, s.denied, s.off_contract, "
                "s.will_topic, "
                "(SELECT COUNT(*) FROM subscriptions u WHERE u.client_id = s.client_id) AS subscriptions, "
                "(SELECT COUNT(*) FROM queue q WHERE q.client_id = s.client_id) AS queued, "
                "(SELECT COALESCE(SUM(LENGTH(m.payload)), 0) FROM queue q JOIN messages m ON m.id = q.message_id "
                " WHERE q.client_id = s.client_id) AS queued_bytes, "
                "(SELECT COUNT(*) FROM queue q WHERE q.client_id = s.client_id AND q.sent > 0) AS sent_unacked "
                "FROM sessions s ORDER BY s.client_id"
            )
        )
