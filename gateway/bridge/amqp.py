"""The bridge's transport on RabbitMQ (beyond one machine). `AmqpTransport` is the only code that imports pika.

Phones, terminals and order systems speak MQTT to RabbitMQ's MQTT plugin, which publishes what
they send to the `amq.topic` exchange (an MQTT topic's `/` becomes `.` in the routing key, and
`.` becomes `/`) and delivers to their sessions what is published there. The bridge speaks AMQP
0-9-1 to the same exchange:

- inbound: `amq.topic` is bound, by each inbound topic filter of the contract (`+` becomes `*`), to
  `fieldgate.inbound`, a consistent-hash exchange (RabbitMQ's `rabbitmq_consistent_hash_exchange`
  plugin) that spreads the messages over `PARTITIONS` durable **quorum** queues,
  `fieldgate.inbound.0` … `.7`, by a hash of the routing key: every message of one topic (one
  courier's fixes, one shop's commands, the order system's orders) goes to the same partition, in
  the order RabbitMQ routed it — all the order MQTT itself promises. All of it is declared
  (idempotently) whenever the bridge connects. Several bridges share the partitions: each consumes
  the ones its `Ownership` gives it (with a PostgreSQL store, `gateway.store.postgres.PartitionLocks`:
  a fair share, no partition consumed by two), and gives one up only after what it received from it
  is committed and acknowledged, so the next owner starts exactly where it stopped. The queues also
  have **single active consumer**, so even two bridges that both believe they own a partition
  cannot interleave it. A delivery is acknowledged only after the commit that applied it (`ack`): one
  unacknowledged when a bridge dies is delivered again, to the bridge that takes the partition over.
- outbound: persistent messages to `amq.topic` on a channel in **publisher confirm** mode; a publish
  is reported (`published`) once RabbitMQ has confirmed it, and the bridge deletes its outbox row
  then. Publishes not confirmed when a connection fails are sent again on the next one. RabbitMQ
  keeps no retained messages for what AMQP publishes: the retain flag is not carried.

pika's `BlockingConnection` is not thread-safe, so it lives on one thread of this transport's own,
which connects (to each of the cluster's nodes in turn, backing off while none answers), consumes
and does what the bridge's worker asks for (`publish`, `ack`), woken by
`add_callback_threadsafe`. As with MQTT, a delivery is acknowledged only on the connection
(generation) it arrived on: after a reconnect RabbitMQ delivers it again.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote, urlsplit

import pika
import pika.exceptions

from gateway.bridge.transport import RECONNECT_MAX_SECONDS, Received, Receiver, TransportFactory, wait_connected
from gateway.core.contract import INBOUND_FILTERS
from gateway.core.lifecycle import Outgoing
from gateway.errors import TransportError

log = logging.getLogger("fieldgate.transport")

EXCHANGE = "amq.topic"  # where RabbitMQ's MQTT plugin publishes, and what its MQTT sessions' queues are bound to
#: The consistent-hash exchange of the inbound messages, and the prefix of its partition queues' names.
INBOUND = "fieldgate.inbound"
#: Partition queues of the inbound messages: the most bridges that can work at once. Every bridge on a cluster must
#: use the same number (it is part of what they declare).
PARTITIONS = 8
#: Deliveries RabbitMQ sends ahead of their acknowledgements, per partition (the bridge commits up to 500 at once).
PREFETCH = 200
#: How often a bridge reviews which partitions it consumes, in seconds.
REVIEW_SECONDS = 1.0


def partition_queue(partition: int) -> str:
    return f"{INBOUND}.{partition}"


class Ownership(Protocol):
    """Which partitions this bridge consumes; asked on the connection's thread."""

    def review(self, held: set[int]) -> tuple[set[int], set[int]]:
        """(partitions to start consuming, partitions to give up) for a bridge consuming `held`."""
        ...

    def release(self, partition: int) -> None:
        """A partition given up is drained (what came from it is committed and acknowledged)."""
        ...

    def close(self) -> None: ...


class EveryPartition:
    """A bridge with its own SQLite store consumes every partition (a second one would only wait behind it)."""

    def review(self, held: set[int]) -> tuple[set[int], set[int]]:
        return set(range(PARTITIONS)) - held, set()

    def release(self, partition: int) -> None:
        """Nothing to release: nobody else takes partitions from a bridge that owns them all."""

    def close(self) -> None:
        """Nothing held beyond the connection."""

_TO_KEY = str.maketrans({"/": ".", ".": "/", "+": "*"})
_TO_TOPIC = str.maketrans({".": "/", "/": "."})


def routing_key(topic_or_filter: str) -> str:
    """An MQTT topic (or filter) as RabbitMQ's MQTT plugin routes it on amq.topic."""
    return topic_or_filter.translate(_TO_KEY)


def mqtt_topic(key: str) -> str:
    """The MQTT topic of a routing key on amq.topic."""
    return key.translate(_TO_TOPIC)


def why(exc: BaseException) -> str:
    """What went wrong reaching a node, in words: pika nests the socket's error inside its own."""
    if isinstance(exc, pika.exceptions.ProbableAuthenticationError):
        return "login refused: check the user and password in the URL"
    if isinstance(exc, pika.exceptions.ProbableAccessDeniedError):
        return "access to the virtual host refused: check the URL's vhost and the user's permissions"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    for inner in (*exc.args, getattr(exc, "exception", None)):  # pika's connector errors keep it as .exception
        if isinstance(inner, BaseException):
            return why(inner)
    return str(exc) or type(exc).__name__


@dataclass(frozen=True)
class EngineUrl:
    """amqp://USER:PASSWORD@HOST[:PORT][/VHOST] — one RabbitMQ node."""

    url: str

    @classmethod
    def parse(cls, url: str) -> EngineUrl:
        parts = urlsplit(url)
        if parts.scheme != "amqp":
            raise TransportError(f"unsupported engine URL scheme {parts.scheme!r} in {url!r}",
                                 hint="Use amqp://USER:PASSWORD@HOST:5672/VHOST, once per RabbitMQ node.")
        if not parts.hostname:
            raise TransportError(f"engine URL {url!r} has no host", hint="Use amqp://USER:PASSWORD@HOST:5672/VHOST.")
        try:
            parts.port  # noqa: B018  # raises on a bad port
        except ValueError as exc:
            raise TransportError(f"engine URL {url!r} has a bad port", hint="Use a port such as 5672.") from exc
        return cls(url)

    def __str__(self) -> str:
        """The URL without its password (for logs)."""
        parts = urlsplit(self.url)
        user = f"{unquote(parts.username)}@" if parts.username else ""
        return f"amqp://{user}{parts.hostname}:{parts.port or 5672}{parts.path or '/'}"


class AmqpTransport:
    """A RabbitMQ connection kept behind start, publish, ack, stop (the `Transport` contract)."""

    def __init__(self, urls: list[EngineUrl], bridge: Receiver, *, ownership: Ownership | None = None,
                 filters: tuple[str, ...] = INBOUND_FILTERS) -> None:
        self.urls = urls
        self.filters = filters
        self.ownership = ownership or EveryPartition()
        self.held: set[int] = set()  # partitions this bridge owns (kept across reconnections)
        self._bridge = bridge
        self._ids = itertools.count(1)
        self._unconfirmed: dict[int, tuple[str, bytes]] = {}  # publish id -> (topic, payload), in order
        self._todo: deque[tuple[str, int, int]] = deque()  # ("publish", id, 0) or ("ack", delivery tag, generation)
        self._generation = 0
        self._connection: pika.BlockingConnection | None = None
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fieldgate-amqp", daemon=True)

    # ---------------------------------------------------------------- Transport (the bridge's threads)

    def start(self, timeout: float | None, cancel: threading.Event) -> None:
        """Start the connection's thread and wait until it consumes; while no node answers it tries each in turn,
        backing off. Raise TransportError after `timeout` seconds (None: never), or once `cancel` is set."""
        self._thread.start()
        why = wait_connected(self._connected, timeout, cancel)
        if why is not None:
            self.stop()
            nodes = ", ".join(map(str, self.urls))
            raise TransportError(f"no RabbitMQ node ({nodes}) accepted the bridge before {why}",
                                 hint="Check the --engine URLs, the user's permissions and that the nodes run.")

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        """Queue a persistent publish to amq.topic; `published(id)` follows RabbitMQ's confirm. Returns the id."""
        publish_id = next(self._ids)
        self._unconfirmed[publish_id] = (topic, payload)
        self._todo.append(("publish", publish_id, 0))
        self._wake()
        return publish_id

    def hand_over(self, rows: list[tuple[int | None, Outgoing]]) -> bool:
        return False

    def ack(self, message: Received) -> bool:
        """Acknowledge a committed delivery, unless its connection is gone (RabbitMQ will deliver it again)."""
        if message.generation != self._generation or not self.connected:
            return False
        self._todo.append(("ack", message.mid, message.generation))
        self._wake()
        return True

    def stop(self) -> None:
        self._stopping.set()
        self._wake()
        if self._thread.is_alive():
            self._thread.join(10)
        self.ownership.close()

    def _wake(self) -> None:
        connection = self._connection
        if connection is not None:
            with contextlib.suppress(pika.exceptions.AMQPError, RuntimeError):  # closing: the next one does it
                connection.add_callback_threadsafe(lambda: None)

    # ---------------------------------------------------------------- the connection's thread

    def _run(self) -> None:
        attempts = 0
        for url in itertools.cycle(self.urls):
            if self._stopping.is_set():
                return
            try:
                self._serve(url)
                attempts = 0
            except (pika.exceptions.AMQPError, OSError) as exc:
                attempts += 1
                log.warning("RabbitMQ node unreachable or lost: %s; trying the next", why(exc),
                            extra={"ctx": {"node": str(url), "attempt": attempts}})
            except Exception:  # not the network: still never leave the bridge without a connection
                attempts += 1
                log.exception("RabbitMQ connection failed; trying the next node", extra={"ctx": {"node": str(url)}})
            finally:
                self._connected.clear()
                self._connection = None
            if attempts >= len(self.urls):  # every node failed in a row: back off
                self._stopping.wait(min(RECONNECT_MAX_SECONDS, 2 ** min(attempts // len(self.urls), 5)))

    def _serve(self, url: EngineUrl) -> None:
        """One connection: declare, consume, publish and acknowledge until it fails or the bridge stops."""
        params = pika.URLParameters(url.url)
        params.heartbeat = 30
        params.blocked_connection_timeout = 60
        connection = pika.BlockingConnection(params)
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            declare(channel, self.filters)
            channel.basic_qos(prefetch_count=PREFETCH)
            self._generation += 1
            partitions = _Consuming(channel, self._generation, self._bridge.received)
            for partition in sorted(self.held):
                partitions.start(partition)
            self._connection = connection
            self._todo.extendleft(reversed([("publish", i, 0) for i in list(self._unconfirmed)]))  # unconfirmed
            self._connected.set()
            log.info("bridge connected to RabbitMQ", extra={"ctx": {"node": str(url), "partitions": len(self.held)}})
            next_review = 0.0
            while not self._stopping.is_set():
                connection.process_data_events(time_limit=REVIEW_SECONDS)
                self._do_todo(channel, partitions)
                if time.monotonic() >= next_review:
                    next_review = time.monotonic() + REVIEW_SECONDS
                    self._review(partitions)
        finally:
            if connection.is_open:
                connection.close()

    def _review(self, partitions: _Consuming) -> None:
        """Take the partitions the ownership gives, give up those it takes back (once drained, released)."""
        taken, given_up = self.ownership.review(self.held)
        for partition in sorted(taken):
            self.held.add(partition)
            partitions.start(partition)
        for partition in sorted(given_up):
            partitions.stop(partition)
        for partition in partitions.drained():
            self.held.discard(partition)
            self.ownership.release(partition)
        if taken or given_up:
            log.info("partitions changed", extra={"ctx": {"taken": sorted(taken), "given_up": sorted(given_up),
                                                          "consuming": sorted(self.held)}})

    def _do_todo(self, channel: pika.adapters.blocking_connection.BlockingChannel, partitions: _Consuming) -> None:
        while self._todo:
            kind, number, of_generation = self._todo.popleft()
            if kind == "ack":
                if of_generation == partitions.generation:
                    channel.basic_ack(number)
                    partitions.acked(number)
                continue
            if (message := self._unconfirmed.get(number)) is None:
                continue  # re-queued after a reconnect and confirmed meanwhile
            topic, payload = message
            channel.basic_publish(EXCHANGE, routing_key(topic), payload,
                                  pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))
            del self._unconfirmed[number]  # confirmed: a blocking channel in confirm mode waits for it
            self._bridge.published(number)


def declare(channel: pika.adapters.blocking_connection.BlockingChannel, filters: tuple[str, ...]) -> None:
    """The inbound exchange and its partition queues, bound; idempotent (every bridge does it when it connects)."""
    channel.exchange_declare(INBOUND, "x-consistent-hash", durable=True)
    for topic_filter in filters:
        channel.exchange_bind(INBOUND, EXCHANGE, routing_key(topic_filter))
    for partition in range(PARTITIONS):
        channel.queue_declare(partition_queue(partition), durable=True,
                              arguments={"x-queue-type": "quorum", "x-single-active-consumer": True})
        channel.queue_bind(partition_queue(partition), INBOUND, "1")  # equal weights


class _Consuming:
    """The partitions one connection consumes, and its deliveries not yet acknowledged, per partition."""

    def __init__(self, channel: pika.adapters.blocking_connection.BlockingChannel, generation: int,
                 received: Callable[[Received], None]) -> None:
        self.channel = channel
        self.generation = generation
        self._received = received
        self._tags: dict[int, str] = {}  # partition -> consumer tag
        self._leaving: set[int] = set()  # cancelled, with deliveries not yet acknowledged
        self._partition_of: dict[int, int] = {}  # delivery tag -> partition
        self._unacked: Counter[int] = Counter()

    def start(self, partition: int) -> None:
        self._leaving.discard(partition)
        if partition in self._tags:
            return

        def deliver(_ch: object, method: pika.spec.Basic.Deliver, _props: object, body: bytes) -> None:
            self._partition_of[method.delivery_tag] = partition
            self._unacked[partition] += 1
            self._received(Received(mqtt_topic(method.routing_key), bytes(body), 1, method.delivery_tag,
                                    self.generation))

        self._tags[partition] = self.channel.basic_consume(partition_queue(partition), deliver)

    def stop(self, partition: int) -> None:
        """No more deliveries from this partition (pika returns those not yet handed over to the queue)."""
        if (tag := self._tags.pop(partition, None)) is not None:
            self.channel.basic_cancel(tag)
            self._leaving.add(partition)

    def acked(self, delivery_tag: int) -> None:
        if (partition := self._partition_of.pop(delivery_tag, None)) is not None:
            self._unacked[partition] -= 1

    def drained(self) -> list[int]:
        """Partitions stopped whose every delivery is acknowledged: theirs to release."""
        done = sorted(p for p in self._leaving if self._unacked[p] <= 0)
        self._leaving -= set(done)
        return done


@dataclass(frozen=True)
class NodeCheck:
    """What `fieldgate cluster check` reports of one RabbitMQ node."""

    node: str
    reachable: bool
    partitions: int = 0  # inbound partition queues declared (a bridge declares all PARTITIONS when it connects)
    consumers: int | None = None  # bridges' consumers over all partitions (one active per partition, others waiting)
    idle: int | None = None  # declared partitions no bridge consumes now: their messages wait
    backlog: int | None = None  # inbound messages waiting for a bridge, over all partitions
    problem: str | None = None


def check_node(url: EngineUrl, *, timeout: float = 5.0) -> NodeCheck:
    """Connect to one node and look at the bridges' inbound partition queues (without declaring anything)."""
    params = pika.URLParameters(url.url)
    params.socket_timeout = params.stack_timeout = timeout
    params.connection_attempts = 1
    try:
        connection = pika.BlockingConnection(params)
    except (pika.exceptions.AMQPError, OSError) as exc:
        return NodeCheck(str(url), False, problem=f"unreachable: {why(exc)}")
    found: list[tuple[int, int]] = []  # (consumers, messages) per declared partition
    missing: list[str] = []
    try:
        for partition in range(PARTITIONS):
            try:
                declared = connection.channel().queue_declare(partition_queue(partition), passive=True).method
                found.append((declared.consumer_count, declared.message_count))
            except pika.exceptions.ChannelClosedByBroker:  # closes that channel only
                missing.append(partition_queue(partition))
    finally:
        if connection.is_open:
            connection.close()
    idle = sum(1 for consumers, _ in found if consumers == 0)
    problem = None
    if missing:
        problem = f"{', '.join(missing)} not declared (a bridge declares them when it connects: start one)"
    elif idle:
        problem = f"{idle} of {PARTITIONS} partitions have no bridge: their messages wait"
    return NodeCheck(str(url), True, len(found), sum(c for c, _ in found), idle, sum(m for _, m in found), problem)


def amqp_transport(urls: list[EngineUrl], ownership: Callable[[], Ownership] = EveryPartition,
                   ) -> TransportFactory:
    """A factory of AmqpTransports to the RabbitMQ nodes at `urls`, for `Bridge`, each consuming the partitions an
    `ownership()` gives it."""
    return lambda bridge: AmqpTransport(urls, bridge, ownership=ownership())
