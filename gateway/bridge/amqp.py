"""The bridge's transport on RabbitMQ (beyond one machine). `AmqpTransport` is the only code that imports pika.

Phones, terminals and order systems speak MQTT to RabbitMQ's MQTT plugin, which publishes what
they send to the `amq.topic` exchange (an MQTT topic's `/` becomes `.` in the routing key, and
`.` becomes `/`) and delivers to their sessions what is published there. The bridge speaks AMQP
0-9-1 to the same exchange:

- inbound: one durable **quorum** queue, `fieldgate.inbound`, bound to `amq.topic` by each inbound
  topic filter of the contract (`+` becomes `*`), declared (idempotently) whenever it connects,
  with **single active consumer**: several bridges may consume, one at a time receives, in the
  order the messages were routed; when it goes, the next takes over where it stopped. A delivery
  is acknowledged only after the commit that applied it (`ack`), so one unacknowledged when a
  bridge dies is delivered again, to the bridge that takes over.
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
from collections import deque
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import pika
import pika.exceptions

from gateway.bridge.transport import RECONNECT_MAX_SECONDS, Received, Receiver, TransportFactory, wait_connected
from gateway.core.contract import INBOUND_FILTERS
from gateway.core.lifecycle import Outgoing
from gateway.errors import TransportError

log = logging.getLogger("fieldgate.transport")

EXCHANGE = "amq.topic"  # where RabbitMQ's MQTT plugin publishes, and what its MQTT sessions' queues are bound to
INBOUND_QUEUE = "fieldgate.inbound"
#: Deliveries RabbitMQ sends ahead of their acknowledgements (the bridge commits up to 500 in one transaction).
PREFETCH = 500

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

    def __init__(self, urls: list[EngineUrl], bridge: Receiver, *, filters: tuple[str, ...] = INBOUND_FILTERS) -> None:
        self.urls = urls
        self.filters = filters
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
            channel.queue_declare(INBOUND_QUEUE, durable=True,
                                  arguments={"x-queue-type": "quorum", "x-single-active-consumer": True})
            for topic_filter in self.filters:
                channel.queue_bind(INBOUND_QUEUE, EXCHANGE, routing_key(topic_filter))
            channel.basic_qos(prefetch_count=PREFETCH)
            self._generation += 1
            generation = self._generation
            channel.basic_consume(INBOUND_QUEUE, lambda _ch, method, _props, body: self._bridge.received(Received(
                mqtt_topic(method.routing_key), bytes(body), 1, method.delivery_tag, generation)))
            self._connection = connection
            self._todo.extendleft(reversed([("publish", i, 0) for i in list(self._unconfirmed)]))  # unconfirmed
            self._connected.set()
            log.info("bridge connected to RabbitMQ", extra={"ctx": {"node": str(url), "queue": INBOUND_QUEUE}})
            while not self._stopping.is_set():
                connection.process_data_events(time_limit=1.0)
                self._do_todo(channel, generation)
        finally:
            if connection.is_open:
                connection.close()

    def _do_todo(self, channel: pika.adapters.blocking_connection.BlockingChannel, generation: int) -> None:
        while self._todo:
            kind, number, of_generation = self._todo.popleft()
            if kind == "ack":
                if of_generation == generation:
                    channel.basic_ack(number)
                continue
            if (message := self._unconfirmed.get(number)) is None:
                continue  # re-queued after a reconnect and confirmed meanwhile
            topic, payload = message
            channel.basic_publish(EXCHANGE, routing_key(topic), payload,
                                  pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))
            del self._unconfirmed[number]  # confirmed: a blocking channel in confirm mode waits for it
            self._bridge.published(number)


@dataclass(frozen=True)
class NodeCheck:
    """What `fieldgate cluster check` reports of one RabbitMQ node."""

    node: str
    reachable: bool
    queue_declared: bool = False  # fieldgate.inbound exists (a bridge declares it when it connects)
    consumers: int | None = None  # bridges consuming it (one active, the others waiting: single active consumer)
    backlog: int | None = None  # inbound messages waiting for a bridge
    problem: str | None = None


def check_node(url: EngineUrl, *, timeout: float = 5.0) -> NodeCheck:
    """Connect to one node and look at the bridges' inbound queue (without declaring anything)."""
    params = pika.URLParameters(url.url)
    params.socket_timeout = params.stack_timeout = timeout
    params.connection_attempts = 1
    try:
        connection = pika.BlockingConnection(params)
    except (pika.exceptions.AMQPError, OSError) as exc:
        return NodeCheck(str(url), False, problem=f"unreachable: {why(exc)}")
    try:
        declared = connection.channel().queue_declare(INBOUND_QUEUE, passive=True).method
        return NodeCheck(str(url), True, True, declared.consumer_count, declared.message_count)
    except pika.exceptions.ChannelClosedByBroker as exc:
        return NodeCheck(str(url), True, problem=f"{INBOUND_QUEUE}: {exc.reply_text} (a bridge declares it when it "
                                                 "connects: start one)")
    finally:
        if connection.is_open:
            connection.close()


def amqp_transport(urls: list[EngineUrl]) -> TransportFactory:
    """A factory of AmqpTransports to the RabbitMQ nodes at `urls`, for `Bridge`."""
    return lambda bridge: AmqpTransport(urls, bridge)
