"""The session engine on its own: fake links, a settable clock and a real broker.db, no gateway process.

test_durability.py and test_conformance.py show the broker end to end through sockets; these pin what only
the engine can show: what is sent, when relative to the group commit, with which flags and packet ids, and
what broker.db holds at each step. Each test is a scenario coroutine run in its own event loop
(`@scenario(...)`) on a `Broker`, the one place that builds an Engine and waits for its commits.
Housekeeping is driven by calling `Engine._tick` after moving the fake clock; the engine's own 1 s timer
reads the same clock, so it can only do what the test's `_tick` would.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import DEADLINE

from gateway.broker.codec import PUBACK, PUBCOMP, PUBREC, PUBREL, UNSUBACK, Publish, split
from gateway.broker.engine import Engine
from gateway.broker.session import Message, Session
from gateway.broker.store import DB_NAME, BrokerStore
from gateway.config import BrokerSettings
from gateway.core.acl import Identity, Role
from gateway.core.lifecycle import Outgoing

CONNACK, SUBACK = 2, 9
_WITH_PACKET_ID = {PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK}


# ---------------------------------------------------------------- fakes


@dataclass(frozen=True)
class Packet:
    """A control packet the engine sent, decoded by its fixed header."""

    kind: int  # CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK
    packet_id: int | None
    body: bytes


class FakeLink:
    """A connection that records, in order, everything the engine sends it."""

    def __init__(self) -> None:
        self.events: list[Publish | Packet] = []
        self.closed = False
        self.on_packet: Callable[[Packet], None] | None = None  # to look at broker.db the moment an ack goes out

    def deliver(self, message: Message, qos: int, retain: bool, dup: bool, packet_id: int | None) -> None:
        self.events.append(Publish(message.topic, message.payload, qos, retain, dup, packet_id))

    def send(self, data: bytes) -> None:
        first, body = split(data)
        kind = first >> 4
        packet = Packet(kind, int.from_bytes(body[:2], "big") if kind in _WITH_PACKET_ID else None, body)
        self.events.append(packet)
        if self.on_packet is not None:
            self.on_packet(packet)

    def close(self) -> None:
        self.closed = True

    @property
    def published(self) -> list[Publish]:
        return [e for e in self.events if isinstance(e, Publish)]

    def payloads(self) -> list[bytes]:
        return [d.payload for d in self.published]

    def acks(self, kind: int) -> list[int | None]:
        """Packet ids of the control packets of one kind sent so far."""
        return [e.packet_id for e in self.events if isinstance(e, Packet) and e.kind == kind]


class Clock:
    """Engine time, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# ---------------------------------------------------------------- the broker under test


@dataclass
class Client:
    """One client's connection to the engine, speaking in engine calls instead of packets."""

    broker: Broker
    session: Session
    link: FakeLink
    present: bool
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int | None:
        """An inbound PUBLISH; returns the packet id it carried."""
        packet_id = next(self._ids) if qos else None
        self.broker.engine.inbound_publish(self.session, topic, payload, qos, retain, packet_id)
        return packet_id

    async def subscribe(self, *filters: str, qos: int = 1) -> None:
        """SUBSCRIBE and wait for the SUBACK (and so for the retained messages it brings)."""
        packet_id = next(self._ids)
        self.broker.engine.subscribe(self.session, packet_id, [(f, qos) for f in filters])
        await self.broker.committed()
        assert packet_id in self.link.acks(SUBACK)

    def ack(self, kind: int, packet_id: int | None) -> None:
        assert packet_id is not None
        self.broker.engine.acknowledged(self.session, kind, packet_id)

    def drop(self) -> None:
        """The connection broke without DISCONNECT."""
        self.broker.engine.detach(self.session, graceful=False)

    def disconnect(self) -> None:
        self.broker.engine.detach(self.session, graceful=True)


class Broker:
    """An Engine on a real broker.db in a temporary folder, with a fake clock. Restarts keep the file."""

    def __init__(self, data_dir: Path, settings: BrokerSettings) -> None:
        self.path = data_dir / DB_NAME
        self.settings = settings
        self.clock = Clock()
        self.engine: Engine
        self._store: BrokerStore | None = None

    async def start(self) -> None:
        self._store = BrokerStore(self.path)
        self.engine = Engine(self._store, self.settings, clock=self.clock)
        await self.engine.start()

    async def committed(self) -> None:
        """Wait until everything the engine has done so far is in broker.db."""
        await asyncio.wait_for(self.engine.flush(), DEADLINE)

    async def stop(self) -> None:
        await self.engine.stop()
        self._close_store()

    async def crash(self) -> None:
        """Abandon the engine as a SIGKILL would: nothing more is written, connections are not detached."""
        for task in self.engine._tasks:
            task.cancel()
        await asyncio.gather(*self.engine._tasks, return_exceptions=True)
        self.engine.commit.close()
        self._close_store()

    async def restart(self, *, crash: bool = False) -> None:
        await (self.crash() if crash else self.stop())
        await self.start()

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    async def connect(self, client_id: str, *, clean: bool = False, will: tuple[str, bytes, int, bool] | None = None,
                      subscribe: tuple[str, ...] = (), qos: int = 1) -> Client:
        """CONNECT (and SUBSCRIBE), waiting for the CONNACK."""
        link = FakeLink()
        session, present = self.engine.attach(client_id, clean, will, link, Identity(Role.local), "mqtt")
        self.engine.connack(session, present)
        await self.committed()
        assert link.acks(CONNACK) == [None]
        client = Client(self, session, link, present)
        if subscribe:
            await client.subscribe(*subscribe, qos=qos)
        return client

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """What broker.db holds now (committed rows only), read on a connection of its own."""
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return [tuple(row) for row in conn.execute(sql)]
        finally:
            conn.close()


def scenario(**settings: Any) -> Callable[[Callable[[Broker], Awaitable[None]]], Callable[[Path], None]]:
    """`async def test_x(broker)` → a plain test running it on a fresh broker.db with these BrokerSettings."""

    def wrap(body: Callable[[Broker], Awaitable[None]]) -> Callable[[Path], None]:
        async def main(tmp_path: Path) -> None:
            broker = Broker(tmp_path, BrokerSettings(**settings))
            await broker.start()
            try:
                await body(broker)
            finally:
                if broker._store is not None:
                    await broker.stop()

        def test(tmp_path: Path) -> None:
            asyncio.run(main(tmp_path))

        test.__name__, test.__qualname__, test.__doc__ = body.__name__, body.__qualname__, body.__doc__
        return test

    return wrap


# ---------------------------------------------------------------- publishing and acknowledging


@scenario()
async def test_a_publishers_puback_waits_for_the_commit(broker: Broker) -> None:
    reader = await broker.connect("reader", subscribe=("t/x",))
    reader.disconnect()
    await broker.committed()
    writer = await broker.connect("writer", clean=True)
    rows_at_puback: list[list[tuple[Any, ...]]] = []
    writer.link.on_packet = lambda p: rows_at_puback.append(broker.rows("SELECT client_id, qos FROM queue"))

    pid = writer.publish("t/x", b"one", qos=1)
    assert writer.link.acks(PUBACK) == []  # routed, not yet committed
    await broker.committed()
    assert writer.link.acks(PUBACK) == [pid]
    assert rows_at_puback == [[("reader", 1)]]  # the queue row was in broker.db when the PUBACK went out


@scenario()
async def test_a_subscribers_puback_deletes_its_queue_row_and_message(broker: Broker) -> None:
    reader = await broker.connect("reader", subscribe=("t/x",))
    writer = await broker.connect("writer", clean=True)
    writer.publish("t/x", b"one", qos=1)
    [got] = reader.link.published
    assert (got.topic, got.payload, got.qos, got.dup, got.retain) == ("t/x", b"one", 1, False, False)
    await broker.committed()
    assert broker.rows("SELECT client_id, sent, packet_id FROM queue") == [("reader", 1, got.packet_id)]

    reader.ack(PUBACK, got.packet_id)
    await broker.committed()
    assert broker.rows("SELECT * FROM queue") == []
    assert broker.rows("SELECT * FROM messages") == []
    assert reader.session.pending() == 0


@scenario()
async def test_a_qos2_publish_is_pubreced_after_the_commit_and_a_repeat_before_pubrel_is_routed_once(
        broker: Broker) -> None:
    reader = await broker.connect("reader", subscribe=("t/x",), qos=2)
    writer = await broker.connect("writer", clean=True)
    pid = writer.publish("t/x", b"once", qos=2)
    assert writer.link.acks(PUBREC) == []
    await broker.committed()
    assert writer.link.acks(PUBREC) == [pid]

    broker.engine.inbound_publish(writer.session, "t/x", b"once", 2, False, pid)  # DUP: our PUBREC was lost
    await broker.committed()
    assert writer.link.acks(PUBREC) == [pid, pid]
    assert reader.link.payloads() == [b"once"]
    broker.engine.pubrel(writer.session, pid)
    broker.engine.inbound_publish(writer.session, "t/x", b"again", 2, False, pid)  # the packet id is free again
    assert reader.link.payloads() == [b"once", b"again"]


# ---------------------------------------------------------------- flow control and redelivery


@scenario(max_inflight_messages=2)
async def test_only_max_inflight_messages_are_in_flight_and_a_puback_lets_the_next_one_go(broker: Broker) -> None:
    reader = await broker.connect("reader", subscribe=("t/x",))
    writer = await broker.connect("writer", clean=True)
    for n in (b"1", b"2", b"3"):
        writer.publish("t/x", n)
    assert reader.link.payloads() == [b"1", b"2"]
    first, second = reader.link.published
    assert first.packet_id != second.packet_id

    reader.ack(PUBACK, second.packet_id)  # any acknowledgement frees a place, not only the oldest's
    assert reader.link.payloads() == [b"1", b"2", b"3"]
    assert len(reader.session.inflight) == 2


@scenario(retry_interval_seconds=20)
async def test_an_unacknowledged_delivery_is_sent_again_with_dup_and_its_packet_id_after_the_retry_interval(
        broker: Broker) -> None:
    reader = await broker.connect("reader", subscribe=("t/x",))
    (await broker.connect("writer", clean=True)).publish("t/x", b"one")
    [first] = reader.link.published

    broker.clock.advance(19.9)
    broker.engine._tick()
    assert len(reader.link.published) == 1
    broker.clock.advance(0.1)
    broker.engine._tick()
    again = reader.link.published[1]
    assert (again.dup, again.packet_id, again.payload) == (True, first.packet_id, b"one")
    assert first.dup is False

    reader.ack(PUBACK, first.packet_id)
    broker.clock.advance(60)
    broker.engine._tick()
    assert len(reader.link.published) == 2


@scenario(max_inflight_messages=2)
async def test_a_persistent_sessions_queue_survives_a_crash_and_what_was_in_flight_comes_back_with_dup(
        broker: Broker) -> None:
    reader = await broker.connect("reader", subscribe=("t/x",))
    writer = await broker.connect("writer", clean=True)
    for n in (b"1", b"2", b"3"):
        writer.publish("t/x", n)
    sent = {d.payload: d.packet_id for d in reader.link.published}
    assert set(sent) == {b"1", b"2"}
    await broker.committed()

    await broker.restart(crash=True)
    back = await broker.connect("reader")  # no SUBSCRIBE this time
    assert back.present is True
    assert [(d.payload, d.dup, d.packet_id) for d in back.link.published] == [
        (b"1", True, sent[b"1"]), (b"2", True, sent[b"2"])]
    back.ack(PUBACK, sent[b"1"])
    third = back.link.published[2]
    assert (third.payload, third.dup) == (b"3", False)
    assert third.packet_id != sent[b"2"]  # still held by the one in flight

    (await broker.connect("writer", clean=True)).publish("t/x", b"4")  # the subscription came back too
    back.ack(PUBACK, sent[b"2"])
    assert back.link.payloads()[-1] == b"4"


@scenario()
async def test_in_flight_deliveries_go_again_with_dup_and_their_packet_ids_when_the_client_reconnects(
        broker: Broker) -> None:
    reader = await broker.connect("reader", subscribe=("t/x",))
    (await broker.connect("writer", clean=True)).publish("t/x", b"one")
    [first] = reader.link.published
    reader.drop()

    back = await broker.connect("reader")
    [again] = back.link.published
    assert (again.payload, again.dup, again.packet_id) == (b"one", True, first.packet_id)


@scenario(retry_interval_seconds=20)
async def test_qos2_delivery_phases_and_a_restart_resends_the_pubrel_not_the_publish(broker: Broker) -> None:
    reader = await broker.connect("reader", subscribe=("t/x",), qos=2)
    (await broker.connect("writer", clean=True)).publish("t/x", b"two", qos=2)
    [publish] = reader.link.published
    pid = publish.packet_id
    assert publish.qos == 2

    reader.ack(PUBREC, pid)
    assert reader.link.acks(PUBREL) == []  # phase 2 is stored before the PUBREL goes
    await broker.committed()
    assert reader.link.acks(PUBREL) == [pid]
    assert broker.rows("SELECT sent, packet_id FROM queue") == [(2, pid)]
    broker.clock.advance(20)
    broker.engine._tick()
    assert reader.link.acks(PUBREL) == [pid, pid]  # the retry re-sends the PUBREL too
    assert len(reader.link.published) == 1

    await broker.restart(crash=True)
    back = await broker.connect("reader")
    assert back.link.published == []
    assert back.link.acks(PUBREL) == [pid]
    back.ack(PUBCOMP, pid)
    await broker.committed()
    assert broker.rows("SELECT * FROM queue") == []


# ---------------------------------------------------------------- sessions: expiry, clean sessions, wills


@scenario(session_expiry_seconds=60, retry_interval_seconds=1000)
async def test_a_session_away_longer_than_session_expiry_seconds_is_forgotten(broker: Broker) -> None:
    away = await broker.connect("away", subscribe=("t/x",))
    here = await broker.connect("here", subscribe=("t/x",))
    away.disconnect()
    (await broker.connect("writer", clean=True)).publish("t/x", b"queued")
    await broker.committed()

    broker.clock.advance(60)
    broker.engine._tick()
    assert "away" in broker.engine.sessions
    broker.clock.advance(1)
    broker.engine._tick()
    await broker.committed()
    assert set(broker.engine.sessions) == {"here", "writer"}  # connected clients never expire
    for table in ("sessions", "subscriptions", "queue"):
        assert broker.rows(f"SELECT client_id FROM {table}") == [("here",)], table
    assert len(broker.rows("SELECT * FROM messages")) == 1  # "here" has not PUBACKed it yet
    assert here.link.payloads() == [b"queued"]

    back = await broker.connect("away")
    assert back.present is False and back.link.published == []


@scenario()
async def test_a_clean_session_keeps_nothing_once_detached(broker: Broker) -> None:
    reader = await broker.connect("reader", clean=True, subscribe=("t/x",))
    writer = await broker.connect("writer", clean=True)
    writer.publish("t/x", b"one")
    await broker.committed()
    assert broker.rows("SELECT * FROM queue") == []  # nothing of a clean session is stored

    reader.drop()
    assert "reader" not in broker.engine.sessions
    writer.publish("t/x", b"two")
    back = await broker.connect("reader", clean=True)
    assert back.present is False and back.link.published == []


@scenario()
async def test_connecting_with_a_clean_session_discards_what_was_queued_for_the_client(broker: Broker) -> None:
    (await broker.connect("reader", subscribe=("t/x",))).disconnect()
    (await broker.connect("writer", clean=True)).publish("t/x", b"queued")
    await broker.committed()
    assert len(broker.rows("SELECT * FROM queue")) == 1

    back = await broker.connect("reader", clean=True)
    await broker.committed()
    assert back.present is False and back.link.published == []
    assert broker.rows("SELECT * FROM queue") == broker.rows("SELECT * FROM messages") == []
    assert broker.rows("SELECT * FROM subscriptions") == []


# ---------------------------------------------------------------- what was queued before a restart


@scenario()
async def test_after_a_restart_a_sessions_queue_is_read_when_its_client_is_back_oldest_first(broker: Broker) -> None:
    await fill_an_offline_queue(broker, 3)
    await broker.restart()
    reader = broker.engine.sessions["reader"]
    assert (reader.shelved, len(reader.queue), reader.pending(), reader.pending_bytes) == (3, 0, 3, 3)
    (await broker.connect("writer", clean=True)).publish("t/x", b"after")
    assert (reader.shelved, len(reader.queue)) == (3, 1)  # the new one waits in memory behind the shelf

    back = await broker.connect("reader")
    assert back.present is True and reader.shelved == 0
    assert back.link.payloads() == [b"0", b"1", b"2", b"after"]
    for d in back.link.published:
        back.ack(PUBACK, d.packet_id)
    await broker.committed()
    assert broker.rows("SELECT * FROM queue") == broker.rows("SELECT * FROM messages") == []


@scenario()
async def test_a_message_two_sessions_wait_for_stays_until_the_second_has_it_after_a_restart(broker: Broker) -> None:
    for client_id in ("a", "b"):
        (await broker.connect(client_id, subscribe=("t/x",))).disconnect()
    (await broker.connect("writer", clean=True)).publish("t/x", b"shared")
    await broker.committed()
    await broker.restart()

    a = await broker.connect("a")
    a.ack(PUBACK, a.link.published[0].packet_id)
    await broker.committed()
    assert broker.rows("SELECT payload FROM messages") == [(b"shared",)]  # b's row, unread, still points at it
    b = await broker.connect("b")
    assert b.link.payloads() == [b"shared"]
    b.ack(PUBACK, b.link.published[0].packet_id)
    await broker.committed()
    assert broker.rows("SELECT * FROM messages") == []


@scenario(session_expiry_seconds=60)
async def test_a_session_forgotten_before_its_queue_was_read_leaves_no_rows_but_what_others_need(
        broker: Broker) -> None:
    (await broker.connect("gone", subscribe=("t/x",))).disconnect()
    broker.clock.advance(30)  # "gone" left 30 s before the others
    for client_id in ("wiped", "kept"):
        (await broker.connect(client_id, subscribe=("t/x",))).disconnect()
    (await broker.connect("writer", clean=True)).publish("t/x", b"m")
    await broker.committed()
    await broker.restart()

    await broker.connect("wiped", clean=True)  # a clean start discards the session and its shelf
    broker.clock.advance(31)
    broker.engine._tick()  # "gone" expires, unread
    await broker.committed()
    assert broker.rows("SELECT client_id FROM queue") == [("kept",)]
    assert broker.rows("SELECT payload FROM messages") == [(b"m",)]
    assert (await broker.connect("kept")).link.payloads() == [b"m"]


@scenario(max_queued_messages=3, queue_full_policy="drop_oldest")
async def test_after_a_restart_the_oldest_dropped_from_a_full_queue_are_the_ones_on_its_shelf(broker: Broker) -> None:
    await fill_an_offline_queue(broker, 3)
    await broker.restart()
    writer = await broker.connect("writer", clean=True)
    writer.publish("t/x", b"3")
    writer.publish("t/x", b"4")
    await broker.committed()
    assert broker.engine.sessions["reader"].dropped == 2
    assert broker.rows("SELECT m.payload FROM queue q JOIN messages m ON m.id = q.message_id ORDER BY q.id") == [
        (b"2",), (b"3",), (b"4",)]
    assert (await broker.connect("reader")).link.payloads() == [b"2", b"3", b"4"]


@scenario(max_queued_bytes=10)
async def test_after_a_restart_the_byte_bound_counts_what_is_on_the_shelf(broker: Broker) -> None:
    _, writer = await fill_an_offline_queue(broker, 0)
    writer.publish("t/x", b"12345")
    writer.publish("t/x", b"12345")
    await broker.committed()
    await broker.restart()
    (await broker.connect("writer", clean=True)).publish("t/x", b"12345")
    await broker.committed()
    assert broker.engine.sessions["reader"].dropped == 1
    assert (await broker.connect("reader")).link.payloads() == [b"12345", b"12345"]


@scenario()
async def test_a_will_is_published_when_the_connection_drops_but_not_after_a_disconnect(broker: Broker) -> None:
    watcher = await broker.connect("watcher", subscribe=("wills/#",))
    dropped = await broker.connect("dropped", will=("wills/dropped", b"gone", 1, True))
    polite = await broker.connect("polite", will=("wills/polite", b"gone", 1, False))
    polite.disconnect()
    dropped.drop()
    assert [(d.topic, d.payload) for d in watcher.link.published] == [("wills/dropped", b"gone")]
    await broker.committed()
    assert broker.rows("SELECT topic, payload FROM retained") == [("wills/dropped", b"gone")]  # its retain flag


@scenario()
async def test_wills_of_connections_a_crash_cut_are_published_at_the_next_start_but_not_after_a_stop(
        broker: Broker) -> None:
    await broker.connect("cut", clean=True, will=("wills/cut", b"gone", 1, True))
    await broker.restart(crash=True)
    assert broker.rows("SELECT topic, payload FROM retained") == [("wills/cut", b"gone")]
    assert broker.rows("SELECT client_id FROM sessions") == []  # the clean session's row is gone with it

    await broker.connect("left", clean=False, will=("wills/left", b"gone", 1, True))
    await broker.restart()
    assert broker.rows("SELECT topic FROM retained") == [("wills/cut",)]
    assert broker.rows("SELECT client_id, connected, will_topic FROM sessions") == [("left", 0, None)]


# ---------------------------------------------------------------- queue bounds


async def fill_an_offline_queue(broker: Broker, count: int) -> tuple[Client, Client]:
    """A persistent reader gone away and `count` QoS 1 messages published to it; (reader, writer)."""
    reader = await broker.connect("reader", subscribe=("t/x",))
    reader.disconnect()
    writer = await broker.connect("writer", clean=True)
    for n in range(count):
        writer.publish("t/x", str(n).encode())
    await broker.committed()
    return reader, writer


@scenario(max_queued_messages=3)
async def test_a_full_queue_rejects_new_messages_by_default_and_counts_them(broker: Broker) -> None:
    assert broker.settings.queue_full_policy == "reject_new"
    reader, writer = await fill_an_offline_queue(broker, 5)
    assert writer.link.acks(PUBACK) == [1, 2, 3, 4, 5]  # the publisher is not punished for a slow reader
    assert reader.session.dropped == 2 and broker.engine.queue_totals() == (3, 2)
    assert broker.rows("SELECT dropped FROM sessions WHERE client_id = 'reader'") == [(2,)]
    assert broker.rows("SELECT m.payload FROM queue q JOIN messages m ON m.id = q.message_id") == [
        (b"0",), (b"1",), (b"2",)]
    assert (await broker.connect("reader")).link.payloads() == [b"0", b"1", b"2"]


@scenario(max_queued_messages=3, queue_full_policy="drop_oldest")
async def test_a_full_queue_can_drop_the_oldest_messages_instead_and_counts_them(broker: Broker) -> None:
    reader, _ = await fill_an_offline_queue(broker, 5)
    assert reader.session.dropped == 2 and broker.engine.dropped_total == 2
    assert broker.rows("SELECT dropped FROM sessions WHERE client_id = 'reader'") == [(2,)]
    assert broker.rows("SELECT payload FROM messages ORDER BY id") == [(b"2",), (b"3",), (b"4",)]
    assert broker.rows("SELECT COUNT(*) FROM queue") == [(3,)]
    assert (await broker.connect("reader")).link.payloads() == [b"2", b"3", b"4"]


@scenario(max_queued_bytes=10)
async def test_the_byte_bound_counts_what_is_in_flight_too(broker: Broker) -> None:
    reader = await broker.connect("reader", subscribe=("t/x",))
    writer = await broker.connect("writer", clean=True)
    for _ in range(3):
        writer.publish("t/x", b"12345")
    assert reader.link.payloads() == [b"12345", b"12345"] and reader.session.dropped == 1
    reader.ack(PUBACK, reader.link.published[0].packet_id)
    writer.publish("t/x", b"12345")
    assert len(reader.link.published) == 3


# ---------------------------------------------------------------- retained messages and $ topics


@scenario()
async def test_a_new_subscription_gets_the_retained_message_flagged_and_an_empty_one_deletes_it(
        broker: Broker) -> None:
    earlier = await broker.connect("earlier", subscribe=("r/+",))
    writer = await broker.connect("writer", clean=True)
    writer.publish("r/a", b"kept", qos=1, retain=True)
    assert [(d.payload, d.retain) for d in earlier.link.published] == [(b"kept", False)]  # live, not retained
    await broker.committed()
    assert broker.rows("SELECT topic, payload, qos FROM retained") == [("r/a", b"kept", 1)]

    later = await broker.connect("later", clean=True)
    await later.subscribe("r/#", qos=0)
    suback = next(i for i, e in enumerate(later.link.events) if isinstance(e, Packet) and e.kind == SUBACK)
    [retained] = later.link.published
    assert later.link.events.index(retained) > suback
    assert (retained.topic, retained.payload, retained.retain, retained.qos) == ("r/a", b"kept", True, 0)

    writer.publish("r/a", b"", qos=1, retain=True)
    await broker.committed()
    assert broker.rows("SELECT * FROM retained") == []
    assert "r/a" not in broker.engine.retained
    last = await broker.connect("last", clean=True, subscribe=("r/+",))
    assert last.link.published == []


@scenario()
async def test_wildcards_at_the_first_level_match_no_dollar_topic_live_or_retained(broker: Broker) -> None:
    everything = await broker.connect("everything", clean=True, subscribe=("#", "+/x"))
    dollar = await broker.connect("dollar", clean=True, subscribe=("$fg/+",))
    writer = await broker.connect("writer", clean=True)
    writer.publish("$fg/x", b"live")
    writer.publish("$fg/r", b"kept", retain=True)
    writer.publish("a/x", b"plain")
    await broker.committed()
    assert everything.link.payloads() == [b"plain"]
    assert dollar.link.payloads() == [b"live", b"kept"]

    late = await broker.connect("late", clean=True, subscribe=("#",))
    assert late.link.published == []
    await late.subscribe("$fg/#")
    assert late.link.payloads() == [b"kept"]


@scenario()
async def test_a_qos2_publish_repeated_after_a_reconnect_is_routed_once(broker: Broker) -> None:
    reader = await broker.connect("reader", subscribe=("t/x",), qos=2)
    writer = await broker.connect("writer")
    pid = writer.publish("t/x", b"once", qos=2)
    await broker.committed()
    writer.drop()  # our PUBREC was lost with the connection
    again = await broker.connect("writer")
    broker.engine.inbound_publish(again.session, "t/x", b"once", 2, False, pid)  # re-sent with DUP
    await broker.committed()
    assert again.link.acks(PUBREC) == [pid]
    assert reader.link.payloads() == [b"once"]


@scenario(session_expiry_seconds=3600)
async def test_a_session_cut_by_a_crash_is_away_from_the_restart_not_from_when_it_connected(broker: Broker) -> None:
    await broker.connect("phone", subscribe=("t/x",))
    broker.clock.advance(7200)  # connected for two hours, then the gateway is killed
    await broker.restart(crash=True)
    broker.engine._tick()
    assert "phone" in broker.engine.sessions
    broker.clock.advance(3601)
    broker.engine._tick()
    assert "phone" not in broker.engine.sessions


# ---------------------------------------------------------------- the embedded gateway inside the commit


class Gateway:
    """Stands in for the bridge's worker: records each batch it commits (with broker.db's rows, as the worker's
    transaction writes them) and answers every inbound message with one outbox row."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.batches: list[tuple[list[bytes], list[int]]] = []  # (inbound payloads, outbox rows published)
        self.release = asyncio.Event()
        self.release.set()
        self._outbox = itertools.count(1)

    async def commit(self, batch: Any) -> list[tuple[int, Any]]:
        await self.release.wait()
        assert self.broker._store is not None
        self.broker._store.apply(batch)
        self.batches.append(([p for _, p, _ in batch.inbound], list(batch.published)))
        return [(next(self._outbox), Outgoing(f"answers/{p.decode()}", p)) for _, p, _ in batch.inbound]

    async def attach(self) -> Client:
        """As `gateway.bridge.local.LocalTransport` attaches: subscribed and committed, then in the commit."""
        engine, link = self.broker.engine, FakeLink()
        session, present = engine.attach("gw", False, None, link, Identity(Role.gateway), "in_process")
        engine.subscribe(session, 1, [("in/#", 1)])
        await self.broker.committed()
        engine.apply_in_commit(session, self.commit)
        engine.connack(session, present)
        await self.broker.committed()
        return Client(self.broker, session, link, present)


@scenario()
async def test_the_gateway_applies_a_message_in_the_commit_its_puback_waits_for(broker: Broker) -> None:
    gateway = Gateway(broker)
    gw = await gateway.attach()
    answers = await broker.connect("answers", subscribe=("answers/#",))
    phone = await broker.connect("phone", clean=True)
    pid = phone.publish("in/fix", b"f1")
    assert phone.link.acks(PUBACK) == []
    await broker.committed()
    assert phone.link.acks(PUBACK) == [pid]
    assert gw.link.published == []  # nothing is delivered to the gateway: it had the message in its commit
    assert broker.rows("SELECT * FROM queue WHERE client_id = 'gw'") == []
    assert answers.link.payloads() == [b"f1"]  # what it published, routed at once
    await broker.committed()
    applied = [inbound for inbound, _ in gateway.batches].index([b"f1"])
    assert gateway.batches[applied + 1] == ([], [1])  # the next commit makes its routing durable


@scenario(gateway_backlog=100)
async def test_publishers_are_not_read_while_the_gateways_backlog_is_full(broker: Broker) -> None:
    gateway = Gateway(broker)
    await gateway.attach()
    phone = await broker.connect("phone", clean=True)
    gateway.release.clear()  # the gateway is busy with a commit
    phone.publish("in/fix", b"first")
    await asyncio.sleep(0)  # the committer takes the first message into the commit under way
    for n in range(98):
        phone.publish("in/fix", b"%d" % n)
    assert broker.engine.reading.is_set()
    phone.publish("in/fix", b"one too many")
    assert not broker.engine.reading.is_set()
    gateway.release.set()
    await broker.committed()
    assert broker.engine.reading.is_set()
    assert len(phone.link.acks(PUBACK)) == 100


@scenario()
async def test_while_the_gateway_is_away_its_messages_are_queued_and_handed_over_when_it_is_back(
        broker: Broker) -> None:
    gateway = Gateway(broker)
    gw = await gateway.attach()
    gw.disconnect()
    phone = await broker.connect("phone", clean=True)
    phone.publish("in/fix", b"while away")
    await broker.committed()
    assert phone.link.acks(PUBACK) != []
    assert broker.rows("SELECT client_id FROM queue") == [("gw",)]
    await broker.restart()
    await gateway.attach()
    await broker.committed()
    assert [b"while away"] in [inbound for inbound, _ in gateway.batches]
    assert broker.rows("SELECT * FROM queue") == []  # deleted in the commit that applied it
