"""The embedded broker's session layer: routing, queues, in-flight messages, retained messages, wills.

This replaces amqtt 0.12.1's in-memory session handling (see gateway/broker/embedded.py for the
list of what it corrects). Everything here runs on the broker's event loop; the only I/O is
handing a `Batch` to be committed: to the embedded gateway's worker, which applies the batch's
inbound messages in the same transaction (`apply_in_commit`, `gateway.bridge.local`), or, while
no gateway is in the commit, to `BrokerStore.apply` on a dedicated writer thread.

Order of events for a QoS-1 PUBLISH from a client:

1. it is routed at once: every matching session gets a `Delivery` (sent now if the client is
   connected and has room in its in-flight window, queued otherwise); deliveries to persistent
   sessions also get a `queue` row in the open batch; for the embedded gateway's session the
   message goes into the batch's `inbound` instead, to be applied in the commit;
2. the publisher's PUBACK waits in the batch's callbacks until the batch has committed (group
   commit: while one batch is being written, the next one fills up);
3. a subscriber's PUBACK deletes its queue row in a later batch. Un-PUBACKed messages stay in
   flight — re-sent with DUP=1 and their original packet id every `retry_interval_seconds` while
   connected, and on reconnect, however long the client was away. QoS 2 deliveries go through
   PUBLISH → PUBREC → PUBREL → PUBCOMP; the phase and packet id are stored, so a PUBREL in flight
   is re-sent as a PUBREL, even after a restart [MQTT-4.4.0-1].

Acknowledgements that promise durable state (PUBACK, PUBREC, SUBACK, UNSUBACK, CONNACK of a
persistent session) are only sent after the state they promise is committed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from gateway import metrics
from gateway.broker.codec import (
    PUBACK,
    PUBCOMP,
    PUBREC,
    PUBREL,
    UNSUBACK,
    encode_ack,
    encode_connack,
    encode_suback,
)
from gateway.broker.commit import GroupCommit, InCommit
from gateway.broker.session import Delivery, Link, Message, Origin, Session
from gateway.broker.store import Batch, BrokerStore, SessionRow
from gateway.broker.topics import SubscriptionIndex, topic_matches
from gateway.config import BrokerSettings
from gateway.core.acl import Identity, Role, may_receive, may_subscribe, needs_receive_check
from gateway.core.contract import BROKER_EVENTS, INBOUND_HINT, device_topic
from gateway.core.lifecycle import Outgoing
from gateway.core.models import BrokerEvent, DeviceEvent, Rejection

log = logging.getLogger("fieldgate.broker")

#: In-flight window of a bridge's session over MQTT (`bridge.in_process: false`): lets it commit large batches.
GATEWAY_WINDOW = 1000
#: A client publishing outside the contract is logged and answered once per topic in this many seconds.
OFF_CONTRACT_QUIET_SECONDS = 60.0


class Engine:
    """All sessions of the embedded broker, and the group commit that makes them durable."""

    def __init__(self, store: BrokerStore, settings: BrokerSettings, *, clock: Callable[[], float] = time.time):
        self.store = store
        self.settings = settings
        self.clock = clock
        self.sessions: dict[str, Session] = {}
        self.index = SubscriptionIndex()
        self.retained: dict[str, Message] = {}
        self.dropped_total = 0
        self.commit = GroupCommit(store, before_alone=self._keep_for_gateway, after=self._after_commit)
        # The embedded gateway, while attached: its session (how a batch is committed with it: `commit.in_commit`).
        self._gateway: Session | None = None
        self._gateway_id: str | None = None  # kept after it detaches: its queue takes what it did not apply
        #: Set while publishers may be read: cleared while the gateway's backlog is over broker.gateway_backlog.
        self.reading = asyncio.Event()
        self.reading.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._next_message_id = 1
        self._next_queue_id = 1
        self._shelf_end = 1  # queue rows below this id were in broker.db at start: each session's shelf

    # ------------------------------------------------------------------ start and stop

    async def start(self) -> None:
        """Load broker.db; publish the wills of connections a crash cut; start committing."""
        started = time.monotonic()
        snap = await self.commit.load()
        self._next_message_id, self._next_queue_id = snap.next_message_id, snap.next_queue_id
        self._shelf_end = snap.next_queue_id
        cut: list[SessionRow] = []
        for row in snap.sessions:
            if row.connected:  # connected until the crash, whenever that was: away from now on
                row.last_seen = self.clock()
                cut.append(row)
            if row.clean:
                self.commit.batch.sessions[row.client_id] = None
                continue
            self.sessions[row.client_id] = Session(row.client_id, clean=False, last_seen=row.last_seen,
                                                   dropped=row.dropped, denied=row.denied,
                                                   off_contract=row.off_contract)
        for client_id, topic_filter, qos in snap.subscriptions:
            if (s := self.sessions.get(client_id)) is not None:
                s.subscriptions[topic_filter] = qos
                self.index.add(topic_filter, client_id, qos)
        queued = 0
        for client_id, count, size in snap.shelves:
            if (s := self.sessions.get(client_id)) is not None:
                s.shelved, s.pending_bytes = count, size
                queued += count
            else:  # a clean session's, deleted above
                self.commit.batch.cleared.append((client_id, self._shelf_end))
        for topic, payload, qos in snap.retained:
            self.retained[topic] = Message(topic, payload, qos)
        self._tasks = [asyncio.create_task(self.commit.run()), asyncio.create_task(self._housekeeping())]
        # Every connection of before is gone: the gateway marks the devices it knew of offline.
        self.publish(BROKER_EVENTS, BrokerEvent(event="started", at=self._now()).model_dump_json().encode(), 1, False)
        for row in cut:
            if not row.clean:
                self._save_session(self.sessions[row.client_id])
            if row.will:
                log.info("publishing the will of a connection cut by the last stop",
                         extra={"ctx": {"client_id": row.client_id, "topic": row.will[0]}})
                self.publish(*row.will)
        await self.flush()
        log.info("broker state loaded", extra={"ctx": {
            "sessions": len(self.sessions), "queued": queued, "retained": len(self.retained),
            "seconds": round(time.monotonic() - started, 3)}})

    async def stop(self) -> None:
        """Disconnect every client (no wills: the broker is leaving, not them) and commit what is left: the embedded
        gateway last, so that it applies what its clients sent before they went."""
        for s in list(self.sessions.values()):
            if s.link is not None and s is not self._gateway:
                s.link.close()
                self.detach(s, graceful=True, how="stopped")
        await self.flush()
        for _ in range(10):  # what the gateway published in its last commits, routed durably through it
            if not self.commit.batch.published:
                break
            await self.flush()
        if (gateway := self._gateway) is not None and gateway.link is not None:
            gateway.link.close()
            self.detach(gateway, graceful=True, how="stopped")
            await self.flush()
        self.commit.log_statistics()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.commit.close()

    async def flush(self) -> None:
        """Wait until everything so far is committed."""
        await self.commit.flush()

    # ------------------------------------------------------------------ the embedded gateway in the commit

    def when_durable(self, callback: Callable[[], None]) -> None:
        self.commit.when_durable(callback)

    def _after_commit(self, published: list[tuple[int, Outgoing]]) -> None:
        """Publish what the gateway's commit queued; read publishers again once its backlog is below the bound."""
        self.publish_outbox(published)
        if not self.reading.is_set() and len(self.commit.batch.inbound) < self.settings.gateway_backlog:
            self.reading.set()

    def _keep_for_gateway(self, batch: Batch) -> None:
        """Committing without the gateway (it left): queue the batch's messages for it as rows of its session, in
        this same batch (their publishers' PUBACKs wait for it), to be handed over when it is back. Outbox rows
        it published stay, and are published again at its next start."""
        s = self.sessions.get(self._gateway_id) if self._gateway_id else None
        inbound, batch.inbound, batch.published = batch.inbound, [], []
        if s is None or not inbound:
            return
        open_batch, self.commit.batch = self.commit.batch, batch  # `_offer` writes into the batch being committed
        try:
            for topic, payload, origin in inbound:
                self._offer(s, Message(topic, payload, 1, origin=None if origin is None else Origin(*origin)), 1,
                            retain=False)
        finally:
            self.commit.batch = open_batch

    def apply_in_commit(self, s: Session, commit: InCommit) -> None:
        """From now on (until `s` detaches) messages routed to `s` are not delivered but handed to `commit`, which
        commits each batch with them in one transaction (the embedded gateway)."""
        self._gateway, self._gateway_id, self.commit.in_commit = s, s.client_id, commit

    def publish_outbox(self, rows: list[tuple[int | None, Outgoing]]) -> None:
        """Publish what the embedded gateway committed (outbox rows; None: a task re-sent, not in the outbox). The
        next commit deletes the rows, with the queue rows and retained messages their routing made."""
        s = self._gateway
        origin = None if s is None else Origin(s.client_id, s.identity)
        for outbox_id, m in rows:
            self.publish(m.topic, m.payload, 1, m.retain, origin=origin)
            if outbox_id is not None:
                self.commit.batch.published.append(outbox_id)
        if rows:
            self.commit.changed()

    # ------------------------------------------------------------------ connections

    def attach(self, client_id: str, clean: bool, will: tuple[str, bytes, int, bool] | None,
               link: Link, identity: Identity, listener: str) -> tuple[Session, bool]:
        """A client connected: take over, resume or create its session. Returns (session, session_present)."""
        old = self.sessions.get(client_id)
        if old is not None and old.link is not None:
            log.info("session taken over by a new connection", extra={"ctx": {"client_id": client_id}})
            old.link.close()
            self.detach(old, graceful=True, how="taken_over")
            old = self.sessions.get(client_id)
        if clean or old is None or old.clean:
            if old is not None:
                self._discard(old)
            s = Session(client_id, clean=clean)
            self.sessions[client_id] = s
            present = False
        else:
            s, present = old, True
            self._unshelve(s)
        s.link, s.will, s.ready, s.last_seen, s.identity = link, will, False, self.clock(), identity
        s.listener = listener
        # A bridge's session is the gateway itself: what it has not applied yet was already acknowledged to
        # publishers, so it is not bounded (its backlog shows in `fieldgate sessions`), and over MQTT a wide window
        # lets it commit large batches.
        own = identity.role == Role.gateway
        s.window = GATEWAY_WINDOW if own else self.settings.max_inflight_messages
        s.bounded = not own
        if present and s.subscriptions:
            self._drop_forbidden_subscriptions(s)
        if s.persistent or will is not None:
            self._save_session(s)
        self._device_event(s, True, "connected")
        return s, present

    def connections(self) -> dict[tuple[str, str], int]:
        """Connected clients by (listener, role)."""
        out: dict[tuple[str, str], int] = {}
        for s in self.sessions.values():
            if s.link is not None:
                key = (s.listener, str(s.identity.role))
                out[key] = out.get(key, 0) + 1
        return out

    def queue_totals(self) -> tuple[int, int]:
        """(deliveries queued or in flight, over every session; deliveries dropped from full queues so far)."""
        return sum(s.pending() for s in self.sessions.values()), self.dropped_total

    def _save_session(self, s: Session) -> None:
        self.commit.batch.sessions[s.client_id] = SessionRow(s.client_id, s.clean, s.link is not None, s.last_seen,
                                                             s.will, s.dropped, s.denied, s.off_contract)
        self.commit.changed()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def _device_event(self, s: Session, online: bool, how: str) -> None:
        """Tell the gateway that an authenticated courier's connection came or went ($fieldgate/devices/...)."""
        if s.identity.role != Role.courier or s.identity.id is None:
            return
        event = DeviceEvent(client_id=s.client_id, online=online, how=how, at=self._now())
        self.publish(device_topic(s.identity.id), event.model_dump_json().encode(), 1, False)

    def _drop_forbidden_subscriptions(self, s: Session) -> None:
        """A resumed session's subscriptions must still be allowed to whoever connects with its client id now."""
        for topic_filter in [f for f in s.subscriptions if not may_subscribe(s.identity, f)]:
            log.warning("dropping a stored subscription the new connection may not have",
                        extra={"ctx": {"client_id": s.client_id, "filter": topic_filter, "identity": str(s.identity)}})
            del s.subscriptions[topic_filter]
            self.index.remove(topic_filter, s.client_id)
            if s.persistent:
                self.commit.batch.subscriptions[(s.client_id, topic_filter)] = None
                self.commit.changed()

    def note_denied(self, s: Session, topic: str, why: str) -> None:
        """A publish or subscription refused by the ACL or a limit: counted per session, logged."""
        s.denied += 1
        now = self.clock()
        if now - s._last_deny_log >= 1.0:
            s._last_deny_log = now
            log.warning("refused: %s", why, extra={"ctx": {"client_id": s.client_id, "topic": topic,
                                                             "denied_total": s.denied}})
        self._save_session(s)  # clean sessions too: `fieldgate sessions` shows the count while connected

    def note_off_contract(self, s: Session, topic: str, why: str, errors_topic: str | None, *,
                          count: bool = True) -> None:
        """A publish to a topic outside the contract (or, count=False, one the ACL refused and `note_denied` counted):
        counted per session; logged and answered with a Rejection on the sender's errors topic at most once a
        minute per client and topic."""
        if count:
            s.off_contract += 1
            self._save_session(s)  # clean sessions too: `fieldgate sessions` shows the count while connected
        now = self.clock()
        if now - s._last_off_contract.get(topic, float("-inf")) < OFF_CONTRACT_QUIET_SECONDS:
            return
        if len(s._last_off_contract) >= 1000:
            s._last_off_contract.clear()
        s._last_off_contract[topic] = now
        log.warning("publish outside the topic contract: %s", why,
                    extra={"ctx": {"client_id": s.client_id, "identity": str(s.identity), "topic": topic,
                                   "answered_on": errors_topic, "count": s.off_contract}})
        if errors_topic is not None:
            rejection = Rejection(reason=why, topic=topic, hint=INBOUND_HINT, at=self._now())
            self.publish(errors_topic, rejection.model_dump_json().encode(), 1, False)

    def note_throttled(self, s: Session, wait: float) -> None:
        now = self.clock()
        if now - s._last_throttle_log >= 1.0:
            s._last_throttle_log = now
            log.warning("throttling a client over broker.max_publish_rate",
                        extra={"ctx": {"client_id": s.client_id, "wait_ms": round(wait * 1000, 1)}})

    def connack(self, s: Session, present: bool) -> None:
        """Send CONNACK once the session is durable, then start delivering."""

        def send() -> None:
            if s.link is None:
                return
            s.link.send(encode_connack(present, 0))
            s.ready = True
            self._pump(s)

        self.when_durable(send)

    def detach(self, s: Session, *, graceful: bool, how: str | None = None) -> None:
        """The connection ended. Without a DISCONNECT first, the will is published. `how` says why, for the
        gateway's presence: disconnect, lost, timeout, taken_over or stopped."""
        if s.link is None:
            return
        self._device_event(s, False, how or ("disconnect" if graceful else "lost"))
        if s is self._gateway:  # from the next commit on, what it has not applied is queued for its return
            self._gateway = self.commit.in_commit = None
        s.link, s.ready, s.last_seen = None, False, self.clock()
        will, s.will = s.will, None
        if s.clean:
            self._discard(s)
        else:
            for d in reversed(s.inflight.values()):
                d.dup = True
                s.queue.appendleft(d)
            s.inflight.clear()
            self._save_session(s)
        if will is not None and not graceful:
            log.info("publishing will", extra={"ctx": {"client_id": s.client_id, "topic": will[0]}})
            self.publish(*will, origin=Origin(s.client_id, s.identity))

    def _unshelve(self, s: Session) -> None:
        """Read what was queued for `s` before the start from broker.db, ahead of what was queued since (its client
        is back, or a bound drops its oldest). One read on the loop, of one session's rows."""
        if not s.shelved:
            return
        shelf = [Delivery(Message(topic, payload, mqos, id=mid, refs=1), qos, queue_id=qid, dup=phase > 0,
                          phase=phase, packet_id=pid or 0)
                 for qid, mid, qos, phase, pid, topic, payload, mqos in self.store.shelf(s.client_id, self._shelf_end)]
        s.queue.extendleft(reversed(shelf))
        s.packet_ids.update(d.packet_id for d in shelf if d.packet_id)
        s.shelved = 0
        log.debug("queued messages read", extra={"ctx": {"client_id": s.client_id, "count": len(shelf)}})

    def _discard(self, s: Session) -> None:
        """Forget a session and everything queued for it."""
        if s.shelved:  # deleted unread
            self.commit.batch.cleared.append((s.client_id, self._shelf_end))
            s.shelved = 0
        for d in (*s.inflight.values(), *s.queue):
            self._release(s, d)
        s.inflight.clear()
        s.queue.clear()
        for topic_filter in s.subscriptions:
            self.index.remove(topic_filter, s.client_id)
            if s.persistent:
                self.commit.batch.subscriptions[(s.client_id, topic_filter)] = None
        if self.sessions.get(s.client_id) is s:
            del self.sessions[s.client_id]
        self.commit.batch.sessions[s.client_id] = None
        self.commit.changed()

    # ------------------------------------------------------------------ publish and deliver

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool,
                on_durable: Callable[[], None] | None = None, origin: Origin | None = None) -> None:
        """Route one message to every matching session; `on_durable` runs once it is committed."""
        if retain:
            if payload:
                self.retained[topic] = Message(topic, payload, qos)
                self.commit.batch.retained[topic] = (payload, qos)
            else:  # [MQTT-3.3.1-10] an empty retained message deletes the retained one
                self.retained.pop(topic, None)
                self.commit.batch.retained[topic] = None
            self.commit.changed()
        msg = Message(topic, payload, qos, origin=origin)
        for client_id, sub_qos in self.index.match(topic).items():
            s = self.sessions.get(client_id)
            if s is not None:
                self._offer(s, msg, min(qos, sub_qos), retain=False)
        if on_durable is not None:
            self.when_durable(on_durable)

    def _offer(self, s: Session, msg: Message, qos: int, *, retain: bool) -> None:
        """Give a session one delivery, stored if the session must survive a restart."""
        if s is self._gateway:
            self._hand_to_gateway(msg)
            return
        if s.link is None and qos == 0:
            return  # QoS 0 is not queued for offline clients
        if needs_receive_check(s.identity) and not may_receive(s.identity, msg.topic, msg.payload):
            return
        d = Delivery(msg, qos, retain=retain)
        if not self._has_room(s, len(msg.payload)):
            return
        if qos and s.persistent:
            if msg.id is None:
                msg.id = self._next_message_id
                self._next_message_id += 1
                self.commit.batch.messages.append((msg.id, msg.topic, msg.payload, msg.qos))
            d.queue_id = self._next_queue_id
            self._next_queue_id += 1
            msg.refs += 1
            self.commit.batch.queued.append((d.queue_id, s.client_id, msg.id, qos, len(msg.payload)))
            self.commit.changed()
        s.queue.append(d)
        s.pending_bytes += len(msg.payload)
        self._pump(s)

    def _hand_to_gateway(self, msg: Message) -> None:
        """Put a message for the embedded gateway into the open batch, which applies it; stop reading from
        publishers while more than broker.gateway_backlog messages wait for it (the commit in progress included)."""
        origin = msg.origin
        self.commit.batch.inbound.append((msg.topic, msg.payload, None if origin is None else (origin.client_id,
                                                                                          origin.identity)))
        self.commit.changed()
        backlog = len(self.commit.batch.inbound) + self.commit.applying
        if self.reading.is_set() and backlog >= self.settings.gateway_backlog:
            self.reading.clear()
            metrics.READS_PAUSED.inc()

    def _full(self, s: Session, size: int) -> bool:
        """Would one more delivery of `size` bytes break max_queued_messages or max_queued_bytes?"""
        limits = self.settings
        return bool((limits.max_queued_messages and s.pending() >= limits.max_queued_messages)
                    or (limits.max_queued_bytes and s.pending_bytes + size > limits.max_queued_bytes))

    def _has_room(self, s: Session, size: int) -> bool:
        """Apply the queue bounds to bounded sessions, by queue_full_policy; counted and logged, never silent."""
        if not s.bounded or not self._full(s, size):
            return True
        if self.settings.queue_full_policy == "drop_oldest" and (s.queue or s.shelved):
            self._unshelve(s)  # the oldest are on its shelf
            while s.queue and self._full(s, size):
                dropped = s.queue.popleft()
                s.pending_bytes -= len(dropped.message.payload)
                self._release(s, dropped)
                self._count_drop(s, "oldest")
            return True
        self._count_drop(s, "newest")
        return False

    def _count_drop(self, s: Session, which: str) -> None:
        s.dropped += 1
        self.dropped_total += 1
        now = self.clock()
        if now - s._last_drop_log >= 1.0:
            s._last_drop_log = now
            log.warning(
                "queue full: dropped the %s message", which,
                extra={"ctx": {"client_id": s.client_id, "queued": s.pending(), "bytes": s.pending_bytes,
                               "dropped_total": s.dropped, "policy": self.settings.queue_full_policy}},
            )
        if s.persistent:
            self._save_session(s)

    def _release(self, s: Session, d: Delivery) -> None:
        """A delivery is done with (acknowledged, dropped or discarded): free its packet id and rows."""
        s.packet_ids.discard(d.packet_id)
        if d.queue_id is not None:
            self.commit.batch.acked.append(d.queue_id)
            d.message.refs -= 1
            if d.message.refs == 0 and d.message.id is not None:
                self.commit.batch.dead_messages.append(d.message.id)
            self.commit.changed()

    def _pump(self, s: Session) -> None:
        """Send queued deliveries while the client's in-flight window has room."""
        link = s.link
        if link is None or not s.ready:
            return
        if s is self._gateway:  # what was queued for it while it was away, handed over with its rows' deletion
            while s.queue:
                d = s.queue.popleft()
                s.pending_bytes -= len(d.message.payload)
                self._hand_to_gateway(d.message)
                self._release(s, d)
            return
        window = s.window
        now = self.clock()
        while s.queue and (window == 0 or len(s.inflight) < window):
            d = s.queue.popleft()
            m = d.message
            if d.qos == 0:
                s.pending_bytes -= len(m.payload)
                link.deliver(m, 0, d.retain, False, None)
                continue
            if not d.packet_id:
                d.packet_id = s.next_packet_id()
            d.sent_at = now
            s.inflight[d.packet_id] = d
            self._transmit(link, d)
            if d.phase == 0:
                self._set_phase(d, 1)

    def _transmit(self, link: Link, d: Delivery) -> None:
        """(Re-)send a delivery in flight: its PUBLISH, or its PUBREL once the client has PUBRECed it."""
        if d.phase == 2:
            link.send(encode_ack(PUBREL, d.packet_id))
            return
        link.deliver(d.message, d.qos, d.retain, d.dup, d.packet_id)
        d.dup = True

    def _set_phase(self, d: Delivery, phase: int) -> None:
        d.phase = phase
        if d.queue_id is not None:
            self.commit.batch.sent.append((phase, d.packet_id, d.queue_id))
            self.commit.changed()

    def acknowledged(self, s: Session, kind: int, packet_id: int) -> None:
        """PUBACK (QoS 1 done), PUBREC (QoS 2: answer PUBREL) or PUBCOMP (QoS 2 done) from the client."""
        d = s.inflight.get(packet_id)
        expected = {PUBACK: (1, 1), PUBREC: (2, 1), PUBCOMP: (2, 2)}[kind]
        if d is None or (d.qos, d.phase) != expected:
            if d is not None and kind == PUBREC and d.phase == 2 and s.link is not None:
                s.link.send(encode_ack(PUBREL, packet_id))  # a repeated PUBREC: repeat the PUBREL
            else:
                log.debug("acknowledgement for a packet id not in flight",
                          extra={"ctx": {"client_id": s.client_id, "packet_id": packet_id, "type": kind}})
            return
        if kind == PUBREC:
            self._set_phase(d, 2)
            d.sent_at = self.clock()
            link = s.link

            def send_pubrel() -> None:  # once phase 2 is stored, so a restart re-sends PUBREL, not PUBLISH
                if s.link is link and link is not None and s.inflight.get(packet_id) is d:
                    self._transmit(link, d)

            self.when_durable(send_pubrel)
            return
        del s.inflight[packet_id]
        s.pending_bytes -= len(d.message.payload)
        self._release(s, d)
        self._pump(s)

    def inbound_publish(self, s: Session, topic: str, payload: bytes, qos: int, retain: bool,
                        packet_id: int | None) -> None:
        """A client's PUBLISH: route it; acknowledge QoS 1 (PUBACK) and 2 (PUBREC) after the commit."""
        if qos == 2 and packet_id in s.inbound_qos2:
            self.when_durable(lambda: s.link and s.link.send(encode_ack(PUBREC, packet_id)))
            return  # a re-sent QoS 2 PUBLISH before PUBREL: already routed once
        ack: Callable[[], None] | None = None
        if qos == 1:
            link = s.link
            ack = lambda: link.send(encode_ack(PUBACK, packet_id))  # noqa: E731
        elif qos == 2:
            assert packet_id is not None
            s.inbound_qos2.add(packet_id)
            link = s.link
            ack = lambda: link.send(encode_ack(PUBREC, packet_id))  # noqa: E731
        self.publish(topic, payload, qos, retain, ack, Origin(s.client_id, s.identity))

    def pubrel(self, s: Session, packet_id: int) -> None:
        s.inbound_qos2.discard(packet_id)

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, s: Session, packet_id: int, granted: list[tuple[str, int | None]]) -> None:
        """Store the granted subscriptions (None = refused); SUBACK after the commit, then retained messages."""
        codes: list[int] = []
        for topic_filter, qos in granted:
            if qos is None:
                codes.append(0x80)
                continue
            codes.append(qos)
            s.subscriptions[topic_filter] = qos
            self.index.add(topic_filter, s.client_id, qos)
            if s.persistent:
                self.commit.batch.subscriptions[(s.client_id, topic_filter)] = qos
                self.commit.changed()

        def acknowledge() -> None:
            if s.link is None:
                return
            s.link.send(encode_suback(packet_id, codes))
            for (topic_filter, _), code in zip(granted, codes, strict=True):
                if code != 0x80:
                    self._send_retained(s, topic_filter, code)

        self.when_durable(acknowledge)

    def _send_retained(self, s: Session, topic_filter: str, qos: int) -> None:
        """Retained messages for one new subscription of this client only, at min(message, subscription) QoS."""
        if "+" not in topic_filter and "#" not in topic_filter:
            found = [self.retained[topic_filter]] if topic_filter in self.retained else []
        else:
            flevels = topic_filter.split("/")
            skip_dollar = flevels[0] in ("+", "#")
            literal = "/".join(itertools.takewhile(lambda level: level not in ("+", "#"), flevels))
            found = [m for t, m in self.retained.items()  # a cheap look at the literal start first: 100k topics
                     if t.startswith(literal) and not (skip_dollar and t.startswith("$"))
                     and topic_matches(flevels, t.split("/"))]
        for retained in found:
            self._offer(s, Message(retained.topic, retained.payload, retained.qos), min(qos, retained.qos),
                        retain=True)

    def unsubscribe(self, s: Session, packet_id: int, filters: list[str]) -> None:
        for topic_filter in filters:
            if s.subscriptions.pop(topic_filter, None) is not None:
                self.index.remove(topic_filter, s.client_id)
                if s.persistent:
                    self.commit.batch.subscriptions[(s.client_id, topic_filter)] = None
                    self.commit.changed()
        self.when_durable(lambda: s.link and s.link.send(encode_ack(UNSUBACK, packet_id)))

    # ------------------------------------------------------------------ timers

    async def _housekeeping(self) -> None:
        """Every second: re-send overdue in-flight messages, expire sessions gone too long."""
        while True:
            await asyncio.sleep(1.0)
            try:
                self._tick()
            except Exception:
                log.exception("broker housekeeping failed; trying again in 1 s")

    def _tick(self) -> None:
        """Re-send overdue in-flight messages; expire sessions whose client has been away too long."""
        now = self.clock()
        retry = self.settings.retry_interval_seconds
        expiry = self.settings.session_expiry_seconds
        for s in list(self.sessions.values()):
            if s.link is not None and s.ready:
                for d in s.inflight.values():
                    if now - d.sent_at >= retry:
                        d.sent_at = now
                        self._transmit(s.link, d)
            elif s.link is None and expiry and now - s.last_seen > expiry:
                log.info("session expired", extra={"ctx": {"client_id": s.client_id, "queued": s.pending(),
                                                            "away_seconds": int(now - s.last_seen)}})
                self._discard(s)
