"""The bridge: runs the gateway against any MQTT 3.1.1 broker, or inside the embedded one's commits.

One worker thread owns the store and does all the writing. Embedded and in process
(`gateway.bridge.local`), the broker's engine hands it each group commit (`Bridge.apply`): the
broker's rows and the gateway's handling of the batch's inbound messages in one transaction.
Against any other broker, paho's network thread only hands messages over (`MqttTransport`) and
the worker does, for each batch of inbound messages:

1. `Gateway.handle_batch` validates, routes and commits them with their outbound messages
   (the outbox) in one transaction;
2. the inbound messages are PUBACKed — only now, so a crash before the commit means the broker
   re-sends them;
3. the outbox rows are published at QoS 1, at most `MAX_IN_FLIGHT` at a time, and deleted when
   the broker PUBACKs them; rows left by a crash are published again at the next start.

The worker also re-sends tasks that got no receipt (see `Gateway.due_resends`).

Several bridges may share one PostgreSQL store (`storage.url`, on RabbitMQ: `gateway.bridge.amqp`).
Then a batch that conflicts with another instance's transaction (`StoreBusy`) is rolled back and
run again, unacknowledged meanwhile; and outbox rows an instance committed but died before
publishing are adopted by the others (`_adopt_orphans`) instead of waiting for its restart.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from datetime import timedelta
from typing import Any, TypeVar

from gateway import metrics
from gateway.bridge.service import Gateway, Handled, Inbound, Reply
from gateway.bridge.transport import BrokerUrl, Received, Transport, TransportFactory, mqtt_transport
from gateway.broker import store as broker_db
from gateway.broker.store import Batch
from gateway.config import Settings
from gateway.core.contract import EMBEDDED_FILTERS, INBOUND_FILTERS
from gateway.core.lifecycle import Outgoing
from gateway.errors import Rejected, StoreBusy, TransportError
from gateway.store.database import location_of
from gateway.store.tables import Store, purge

log = logging.getLogger("fieldgate.bridge")

T = TypeVar("T")

#: Most inbound messages committed in one transaction.
BATCH_MAX = 500
#: Most outbound messages handed to paho and not yet PUBACKed. The rest wait in `Bridge._to_send`
#: (paho's own queue costs O(queue) per PUBACK).
MAX_IN_FLIGHT = 100
#: How often the worker looks for tasks to re-send and for operators' commands, in seconds.
RESEND_CHECK_SECONDS = 0.2
#: How often the timers run (accept timeouts, waiting orders, unconfirmed changes, notices after quiet hours), s.
TIMERS_EVERY_SECONDS = 1.0
#: How often the worker looks for finished orders whose retained state to clear, in seconds.
CLEAR_CHECK_SECONDS = 1.0
#: The lease (`Store.leads`) of the work one bridge does for all that share a store: re-sends, operators' commands,
#: dispatch's timers, clearing finished states, purging.
HOUSEKEEPING = "housekeeping"
#: How often the worker looks for outbox rows no bridge is publishing (an instance sharing the store died), seconds.
ADOPT_EVERY_SECONDS = 5.0
#: How old an outbox row this bridge does not hold must be to be adopted, in seconds: a live instance publishes its
#: rows within milliseconds (seconds under a backlog), so one this old was left by an instance that died.
ORPHANED_AFTER_SECONDS = 30.0
#: How often personal data past storage.retention_days is purged, in seconds.
PURGE_EVERY_SECONDS = 86_400


def over_mqtt(settings: Settings, url: Callable[[], BrokerUrl], *, embedded: bool = False) -> TransportFactory:
    """The bridge's transport to an MQTT broker at `url()` (asked when the bridge starts). On the embedded
    broker it also reads the broker's own connection events."""
    subscriptions = INBOUND_FILTERS + (EMBEDDED_FILTERS if embedded else ())
    return lambda bridge: mqtt_transport(
        url(), settings.bridge.client_id, keepalive=settings.bridge.keepalive, max_in_flight=MAX_IN_FLIGHT,
        subscriptions=subscriptions)(bridge)


class Bridge:
    """Subscribes to the inbound topics through its transport and runs the gateway until stopped."""

    def __init__(self, settings: Settings, transport: TransportFactory) -> None:
        self.settings = settings
        self.store = Store(location_of(settings), synchronous=settings.storage.synchronous.upper())
        self.gateway = Gateway(self.store, settings)
        self._inbox: queue.Queue[Received | None] = queue.Queue()  # None: wake up, there is a call
        self._calls: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()
        self._acked: queue.Queue[int] = queue.Queue()
        self._in_flight: dict[int, int | None] = {}  # paho packet id -> outbox row id (None: a re-sent task)
        self._to_send: deque[tuple[int | None, Outgoing]] = deque()
        self._newest_retained: dict[str, int] = {}  # retained topic -> newest outbox row waiting for it
        self._broker_attached = False  # broker.db attached to the store's connection (embedded, in process)
        # Outbox rows whose routing the last embedded commit made durable, deleted by the next one. Not by the same
        # one: a transaction over two WAL files is atomic per file only, and fieldgate.db commits first, so a crash
        # between the two could keep the deletion and lose the routing (the queue rows of offline subscribers).
        self._routed: list[int] = []
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name="fieldgate-bridge", daemon=True)
        self._make_transport = transport
        self.transport: Transport | None = None

    def start(self, timeout: float | None = 10.0) -> None:
        """Connect (waiting at most `timeout` seconds, None: until `stop`), re-publish what a previous run left in
        the outbox, and start the worker."""
        self.transport = self._make_transport(self)
        self.transport.start(timeout, self._stop)
        # With a shared store, other instances are publishing their rows now: those of dead ones are adopted instead.
        leftovers = [] if self.store.shared else self.store.pending_outbox()
        if leftovers:
            log.info("re-publishing outbox left by the previous run", extra={"ctx": {"messages": len(leftovers)}})
        self._queue_for_sending(leftovers)
        self._worker.start()

    # Receiver: what the transport calls.

    def received(self, message: Received) -> None:
        self._inbox.put(message)

    def published(self, mid: int) -> None:
        self._acked.put(mid)

    def apply(self, batch: Batch) -> Future[list[tuple[int, Outgoing]]]:
        """The embedded broker's group commit on the worker: broker.db's rows (attached to fieldgate.db's
        connection), the gateway's handling of the batch's inbound messages and the deletion of the outbox rows
        the broker has published, in one transaction."""

        def work() -> list[tuple[int, Outgoing]]:
            if not self._broker_attached:
                broker_db.attach(self.store.conn, self.settings.data_dir, self.settings.storage.synchronous.upper())
                self._broker_attached = True
            routed = self._routed

            def also() -> None:
                broker_db.write(self.store.conn, batch, "broker")
                self.store.delete_outbox(routed)

            with metrics.BRIDGE_BATCH.time():
                rows = self.gateway.handle_batch((Inbound(*m) for m in batch.inbound), also=also)
            self._routed = batch.published
            return rows

        return self.call(work)

    @property
    def connected(self) -> bool:
        """The transport is connected to the broker."""
        return self.transport is not None and self.transport.connected

    @property
    def running(self) -> bool:
        """The worker is handling messages (it starts once the broker is reached)."""
        return self._worker.is_alive() and not self._stop.is_set()

    def call(self, work: Callable[[], T]) -> Future[T]:
        """Run `work` on the worker thread, between batches (the one thread that writes fieldgate.db); its result
        or exception arrives in the future."""
        future: Future[T] = Future()
        self._calls.put((work, future))
        self._inbox.put(None)
        return future

    def request(self, message: Inbound, respond: Callable[[Handled], Reply], *, key: tuple[str, str] | None = None,
                refused: Rejected | None = None) -> Future[Reply]:
        """`Gateway.request` on the worker thread: a message from a sender that waits for the answer (the HTTP side),
        handled like any other, in a transaction of its own; what it publishes goes out like any batch's."""

        def work() -> Reply:
            rows, reply = self.gateway.request(message, respond, key=key, refused=refused)
            self._queue_for_sending(rows)
            return reply

        return self.call(work)

    def stop(self) -> None:
        """Finish the batch in hand, disconnect; calls still waiting fail (their callers answer 'try again')."""
        self._stop.set()
        if self._worker.is_alive():
            self._worker.join()
        while not self._calls.empty():
            _, future = self._calls.get_nowait()
            if future.set_running_or_notify_cancel():
                future.set_exception(TransportError("the bridge stopped before handling this"))
        if self.transport is not None:
            self.transport.stop()
        if self._routed:  # the broker has stopped: its last commit made their routing durable
            with self.store.transaction():
                self.store.delete_outbox(self._routed)
            self._routed = []

    def close(self) -> None:
        """Close the store (after `stop`, or when `start` failed)."""
        self.store.close()

    # ------------------------------------------------------------------ worker thread

    def _run(self) -> None:
        next_resend = next_clear = next_timers = next_adopt = 0.0
        next_purge = time.monotonic() + 60  # not during the start-up rush
        batch: list[Received] = []
        while not self._stop.is_set():
            try:
                batch = batch or self._take_batch()
                if batch:
                    self._process(batch)
                    batch = []
                self._run_calls()
                self._forget_acked()
                # Work done for every bridge on the store, by the one holding its lease (SQLite: this one).
                leading = self.store.leads(HOUSEKEEPING)
                if leading and time.monotonic() >= next_resend and self.transport.connected:
                    next_resend = time.monotonic() + RESEND_CHECK_SECONDS
                    self._to_send.extend((None, message) for message in self.gateway.due_resends())
                    self._queue_for_sending(self.gateway.run_operator_commands())
                if leading and time.monotonic() >= next_timers:
                    next_timers = time.monotonic() + TIMERS_EVERY_SECONDS
                    self._queue_for_sending(self.gateway.run_timers())
                if leading and time.monotonic() >= next_clear:
                    next_clear = time.monotonic() + CLEAR_CHECK_SECONDS
                    self._queue_for_sending(self.gateway.clear_final_states())
                if self.store.shared and time.monotonic() >= next_adopt and self.transport.connected:
                    next_adopt = time.monotonic() + ADOPT_EVERY_SECONDS
                    self._adopt_orphans()
                self._send_some()
                if leading and time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + PURGE_EVERY_SECONDS
                    self._purge()
            except StoreBusy as exc:
                # Another instance's transaction won a conflict, or the connection to PostgreSQL was lost (getting a
                # new one waited): run the batch again, unacknowledged meanwhile.
                metrics.STORE_RETRIES.inc()
                log.warning("batch rolled back: %s; running it again", exc.message,
                            extra={"ctx": {"messages": len(batch)}})
                self._stop.wait(0.05)
            except Exception:
                # Not a bad message (those are handled per message): the database or the transport failed.
                # Keep the batch, unacknowledged, and try again; the broker holds it meanwhile.
                log.exception("bridge step failed; retrying in 1 s", extra={"ctx": {"messages": len(batch)}})
                self._stop.wait(1.0)

    def _take_batch(self) -> list[Received]:
        try:
            batch = [self._inbox.get(timeout=0.05)]
        except queue.Empty:
            return []
        while len(batch) < BATCH_MAX:
            try:
                batch.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        return [m for m in batch if m is not None]

    def _run_calls(self) -> None:
        while True:
            try:
                work, future = self._calls.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(work())
            except BaseException as exc:
                future.set_exception(exc)

    def _process(self, batch: list[Received]) -> None:
        with metrics.BRIDGE_BATCH.time():
            queued = self.gateway.handle_batch(Inbound(m.topic, m.payload, m.origin) for m in batch)
        for message in batch:
            self.transport.ack(message)
        self._queue_for_sending(queued)

    def _adopt_orphans(self) -> None:
        """Publish outbox rows another bridge instance on the same store committed and died before publishing."""
        held = {i for i in self._in_flight.values() if i is not None} | {i for i, _ in self._to_send if i is not None}
        now = self.gateway.now()
        with self.store.transaction():
            adopted = self.store.adopt_outbox(now - timedelta(seconds=ORPHANED_AFTER_SECONDS), now, held)
        if adopted:
            log.info("publishing outbox rows left by a bridge that stopped", extra={"ctx": {"messages": len(adopted)}})
            self._queue_for_sending(adopted)

    def _purge(self) -> None:
        days = self.settings.storage.retention_days
        if not days:
            return
        counts = purge(self.store, self.settings.data_dir, self.gateway.now() - timedelta(days=days))
        log.info("purged personal data past retention", extra={"ctx": {"days": days, **counts}})

    def _queue_for_sending(self, rows: list[tuple[int, Outgoing]]) -> None:
        for outbox_id, message in rows:
            if message.retain:
                self._newest_retained[message.topic] = outbox_id
        self._to_send.extend(rows)

    def _send_some(self) -> None:
        """Publish waiting messages, in order, while fewer than MAX_IN_FLIGHT await their PUBACK.

        A retained message that a newer one for the same topic replaces before it was sent is not
        sent at all (its outbox row is simply deleted).
        """
        if self._to_send and self.transport.hand_over(list(self._to_send)):
            for _, message in self._to_send:
                metrics.MESSAGES_OUT.labels(metrics.topic_class(message.topic)).inc()
            self._to_send.clear()
            self._newest_retained.clear()
            return
        superseded: list[int] = []
        while self._to_send and len(self._in_flight) < MAX_IN_FLIGHT:
            outbox_id, message = self._to_send.popleft()
            if message.retain and outbox_id is not None:
                if self._newest_retained.get(message.topic) != outbox_id:
                    superseded.append(outbox_id)
                    continue
                del self._newest_retained[message.topic]
            mid = self.transport.publish(message.topic, message.payload, retain=message.retain)
            self._in_flight[mid] = outbox_id
            metrics.MESSAGES_OUT.labels(metrics.topic_class(message.topic)).inc()
        if superseded:
            with self.store.transaction():
                self.store.delete_outbox(superseded)

    def _forget_acked(self) -> None:
        done: list[int] = []
        while True:
            try:
                mid = self._acked.get_nowait()
            except queue.Empty:
                break
            if mid in self._in_flight and (outbox_id := self._in_flight.pop(mid)) is not None:
                done.append(outbox_id)
        if done:
            with self.store.transaction():
                self.store.delete_outbox(done)
