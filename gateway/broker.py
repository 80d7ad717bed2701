"""The embedded MQTT broker: amqtt 0.12.1 with a durable session layer. The only module that imports amqtt.

What amqtt still does: its listeners (TCP, TLS, WebSocket; `Broker.start`/`shutdown`) and CONNECT
parsing and validation (`BrokerProtocolHandler.init_from_connect`). Authentication and the topic
ACL are fieldgate's (`gateway.users`, `gateway.acl`); amqtt's plugin set is configured empty.

What `FieldgateBroker` replaces, each behaviour of amqtt 0.12.1 named with where it lived:

- Connections: `Broker._client_connected` → `FieldgateBroker._serve`, which hands the session
  to `gateway.sessions.Engine` instead of `Broker._sessions`.
- Sessions, subscriptions, offline queues and retained messages lived in memory and
  `Broker.start()`/`shutdown()` cleared them → persisted in broker.db and restored at start
  (`gateway.broker_store`).
- `ProtocolHandler._handle_qos1_message_flow` sent the publisher's PUBACK as soon as the
  message was queued in memory → PUBACK after the group commit (`Engine.inbound_publish`).
- The same method dropped an outgoing QoS-1 message the subscriber had not PUBACKed within a
  hard-coded 5 s, never to be re-sent → it stays in flight until PUBACKed, re-sent with DUP=1
  every `broker.retry_interval_seconds` and on reconnect (`Engine._housekeeping`, `Engine.detach`).
- `Broker._handle_client_session` sent a connecting client the retained messages matching *any*
  client's subscriptions → only for the client's own new subscriptions (`Engine._send_retained`).
- `Broker._run_broadcast` forwarded at the subscription's QoS → min(publish, subscription).
- `Broker._publish_session_retained_messages` delivered queued offline messages with RETAIN=1
  → RETAIN=0 except for retained messages sent because of a new subscription [MQTT-3.3.1-9].
- Queues were unbounded → `broker.max_queued_messages` / `max_queued_bytes`, policy
  `queue_full_policy`, counted and logged.
- `BrokerProtocolHandler.handle_read_timeout()` did nothing, so a silent client stayed
  "connected" forever and its will was never sent → closed after 1.5 times its keep-alive, will
  published (`Connection._watchdog`).
- `AnonymousAuthPlugin(allow_anonymous=True)` marked every session anonymous, even named ones,
  and amqtt then queued nothing for it → not loaded; `gateway.users.Authenticator` decides, and
  anonymous clients (loopback only) keep persistent sessions like anyone else.
- The listener's `max_connections` made extra clients *wait* for a slot → `broker.max_connections`
  refuses them with CONNACK 3 (server unavailable).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from amqtt.adapters import (
    ReaderAdapter,
    StreamReaderAdapter,
    StreamWriterAdapter,
    WebSocketsReader,
    WebSocketsWriter,
    WriterAdapter,
)
from amqtt.broker import Broker
from amqtt.errors import BrokerError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session as AmqttSession

from gateway import acl, codec
from gateway.acl import Identity, Role
from gateway.broker_store import DB_NAME, BrokerStore
from gateway.codec import ProtocolViolation
from gateway.config import Settings
from gateway.contract import INBOUND_FILTERS
from gateway.errors import BrokerStartError
from gateway.sessions import Engine, Session
from gateway.store import db_path
from gateway.transport import BrokerUrl, Received, TransportFactory
from gateway.users import BRIDGE_USER, Authenticator, UserStore

log = logging.getLogger("fieldgate.broker")

#: The amqtt release whose internals this module relies on; tests/test_broker.py checks it.
AMQTT_VERSION = "0.12.1"
#: Seconds a new connection has to send its CONNECT.
CONNECT_TIMEOUT = 10.0


def listeners(settings: Settings) -> dict[str, dict[str, Any]]:
    """amqtt listener configs by name ('default' is the plain MQTT one, which amqtt requires)."""
    out: dict[str, dict[str, Any]] = {
        "default": {"type": "tcp", "bind": f"{settings.mqtt.host}:{settings.mqtt.port}"}
    }
    if settings.tls.enabled:
        out["tls"] = {"type": "tcp", "bind": f"{settings.tls.host}:{settings.tls.port}", "ssl": True,
                      "certfile": str(settings.tls.certfile), "keyfile": str(settings.tls.keyfile)}
    if settings.websocket.enabled:
        out["websocket"] = {"type": "ws", "bind": f"{settings.websocket.host}:{settings.websocket.port}"}
    return out


def amqtt_config(settings: Settings) -> dict[str, Any]:
    """The amqtt config dict for our settings. An empty `plugins` replaces amqtt's default plugin set."""
    return {"listeners": listeners(settings), "timeout_disconnect_delay": 0, "plugins": {}}


class RateLimit:
    """Token bucket for one client's PUBLISH packets: `rate` per second, bursts up to `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def delay(self) -> float:
        """Seconds to wait before this PUBLISH may be handled (0 if within the limit)."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class Connection:
    """One client's network connection after CONNECT: reads packets, writes bytes, watches keep-alive."""

    def __init__(self, reader: ReaderAdapter, writer: WriterAdapter, abort: Any, keepalive: int) -> None:
        self.reader = reader
        self.writer = writer
        self._abort = abort
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._dirty = asyncio.Event()
        self._flusher = asyncio.create_task(self._flush())
        self.last_read = self._loop.time()
        self._grace = keepalive * 1.5  # [MQTT-3.1.2-24]
        self._timer = self._loop.call_later(self._grace, self._watchdog) if keepalive else None
        self.timed_out = False

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.writer.write(data)
            self._dirty.set()

    async def _flush(self) -> None:
        try:
            while not self.closed:
                await self._dirty.wait()
                self._dirty.clear()
                await self.writer.drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        except Exception:  # the websockets library raises its own ConnectionClosed
            log.debug("write failed", exc_info=True)

    def _watchdog(self) -> None:
        idle = self._loop.time() - self.last_read
        if idle >= self._grace:
            self.timed_out = True
            self.close()
        else:
            self._timer = self._loop.call_later(self._grace - idle, self._watchdog)

    def close(self) -> None:
        """Drop the connection now; the read loop ends with an error."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._flusher.cancel()
        self._abort()

    async def read_exactly(self, n: int) -> bytes:
        data = await self.reader.read(n)
        if len(data) < n:
            raise EOFError
        return data

    async def read_packet(self, max_bytes: int) -> tuple[int, int, bytes]:
        """(packet type, flags, body) of the next packet."""
        first = (await self.read_exactly(1))[0]
        length, multiplier = 0, 1
        for _ in range(4):
            byte = (await self.read_exactly(1))[0]
            length += (byte & 0x7F) * multiplier
            if not byte & 0x80:
                break
            multiplier *= 128
        else:
            raise ProtocolViolation("remaining length longer than 4 bytes")
        if length > max_bytes:
            raise ProtocolViolation(f"packet of {length} bytes exceeds broker.max_packet_bytes ({max_bytes})")
        body = await self.read_exactly(length) if length else b""
        self.last_read = self._loop.time()
        return first >> 4, first & 0x0F, body


class FieldgateBroker(Broker):
    """amqtt's Broker with connections served by fieldgate's durable session engine."""

    def __init__(self, config: dict[str, Any], engine: Engine, settings: Settings, auth: Authenticator) -> None:
        super().__init__(config, loop=asyncio.get_running_loop())
        self.engine = engine
        self.fg = settings
        self.auth = auth
        self.links: set[Connection] = set()
        self._hosts = {name: cfg["bind"].rsplit(":", 1)[0] for name, cfg in config["listeners"].items()}

    # Entry points of amqtt's listeners: keep a way to abort the transport, then serve.

    async def stream_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               listener_name: str) -> None:
        await self._serve(listener_name, StreamReaderAdapter(reader), StreamWriterAdapter(writer),
                          writer.transport.abort)

    async def ws_connected(self, websocket: Any, listener_name: str) -> None:
        await self._serve(listener_name, WebSocketsReader(websocket), WebSocketsWriter(websocket),
                          websocket.transport.abort)

    async def _client_connected(self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        raise NotImplementedError("FieldgateBroker serves connections in _serve")

    # Messages published by amqtt plugins go through the engine too.

    async def _broadcast_message(self, session: AmqttSession | None, topic: str | None,
                                 data: bytes | bytearray | None, force_qos: int | None = None) -> None:
        if topic and data is not None:
            self.engine.publish(topic, bytes(data), force_qos or 0, False)

    async def retain_message(self, source_session: AmqttSession | None, topic_name: str | None,
                             data: bytes | bytearray | None, qos: int | None = None) -> None:
        if topic_name:
            self.engine.publish(topic_name, bytes(data or b""), qos or 0, True)

    # ------------------------------------------------------------------ one connection

    async def _serve(self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter, abort: Any) -> None:
        server = self._servers.get(listener_name)
        if server is None:
            abort()
            return
        await self._connection(listener_name, reader, writer, abort)

    async def _connection(self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter,
                          abort: Any) -> None:
        peer = writer.get_peer_info()
        try:
            _, incoming = await asyncio.wait_for(
                BrokerProtocolHandler.init_from_connect(reader, writer, self.plugins_manager), CONNECT_TIMEOUT
            )
        except Exception as exc:  # amqtt raises AMQTTError/MQTTError/NoDataError, or the codec fails
            log.info("connection refused before CONNECT completed: %s", exc or type(exc).__name__,
                     extra={"ctx": {"peer": peer}})
            abort()
            return
        client_id = incoming.client_id or ""
        ctx = {"client_id": client_id, "user": incoming.username, "peer": peer[0] if peer else None}
        will = None
        if incoming.will_flag and incoming.will_topic is not None:
            try:
                codec.check_topic_name(incoming.will_topic)
            except ProtocolViolation:
                log.info("refused: invalid will topic", extra={"ctx": ctx})
                abort()
                return
            will = (incoming.will_topic, bytes(incoming.will_message or b""), incoming.will_qos or 0,
                    bool(incoming.will_retain))
        identity = self.auth.identify(incoming.username, incoming.password, listener_host=self._hosts[listener_name],
                                      peer_host=peer[0] if peer else None)
        refusal = None
        if identity is None:
            refusal = (5, "not authorized: unknown user, wrong password, or anonymous where it is not allowed")
        elif will is not None and not acl.may_publish(identity, will[0]):
            refusal = (5, f"not authorized to publish its will on {will[0]}")
        elif client_id == self.fg.bridge.client_id and self.fg.bridge.in_process and identity.role != Role.gateway:
            refusal = (2, f"identifier rejected: client id {client_id!r} is the embedded bridge's")
        elif self.fg.broker.max_connections and len(self.links) >= self.fg.broker.max_connections:
            refusal = (3, f"server unavailable: broker.max_connections ({self.fg.broker.max_connections}) reached")
        if refusal is not None:
            writer.write(codec.encode_connack(False, refusal[0]))
            await writer.drain()
            log.warning("refused connection: %s", refusal[1], extra={"ctx": ctx})
            abort()
            return
        assert identity is not None
        link = Connection(reader, writer, abort, incoming.keep_alive)
        self.links.add(link)
        session, present = self.engine.attach(client_id, bool(incoming.clean_session), will, link, identity)
        log.debug("client connected", extra={"ctx": {**ctx, "identity": str(identity),
                                                     "clean": incoming.clean_session, "session_present": present}})
        self.engine.connack(session, present)
        graceful = False
        try:
            graceful = await self._packets(link, session)
        except ProtocolViolation as exc:
            log.info("closing connection: %s", exc, extra={"ctx": ctx})
        except (EOFError, ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        except Exception as exc:  # a websocket closing raises the websockets library's own errors
            log.debug("connection ended: %r", exc, extra={"ctx": ctx})
        finally:
            if link.timed_out:
                log.info("keep-alive expired", extra={"ctx": {**ctx, "keepalive": incoming.keep_alive}})
            self.links.discard(link)
            if session.link is link:
                self.engine.detach(session, graceful=graceful)
            link.close()

    def _topic_problem(self, topic: str) -> str | None:
        """Why a topic (name or filter) breaks the configured limits, or None."""
        limits = self.fg.broker
        if len(topic.encode()) > limits.max_topic_length:
            return f"topic longer than broker.max_topic_length ({limits.max_topic_length} bytes)"
        if topic.count("/") + 1 > limits.max_topic_levels:
            return f"topic deeper than broker.max_topic_levels ({limits.max_topic_levels})"
        return None

    async def _packets(self, link: Connection, s: Session) -> bool:
        """Serve packets until the client disconnects; True if it sent DISCONNECT."""
        engine, max_bytes, identity = self.engine, self.fg.broker.max_packet_bytes, s.identity
        limited = self.fg.broker.max_publish_rate > 0 and identity.role not in (Role.gateway, Role.local)
        bucket = RateLimit(self.fg.broker.max_publish_rate, self.fg.broker.publish_burst) if limited else None
        while True:
            kind, flags, body = await link.read_packet(max_bytes)
            if kind == codec.PUBLISH:
                p = codec.decode_publish(flags, body)
                if bucket is not None and (wait := bucket.delay()) > 0:
                    engine.note_throttled(s, wait)
                    await asyncio.sleep(wait)  # throttle this client only: its socket is simply read later
                problem = self._topic_problem(p.topic)
                if problem is None and (p.topic.startswith("$SYS") or not acl.may_publish(identity, p.topic)):
                    problem = f"{identity} may not publish to this topic"
                if problem is not None:
                    engine.note_denied(s, p.topic, problem)
                    if p.qos:  # 3.1.1 has no negative acknowledgement: acknowledge and drop
                        link.send(codec.encode_ack(codec.PUBACK if p.qos == 1 else codec.PUBREC, p.packet_id or 0))
                    continue
                engine.inbound_publish(s, p.topic, p.payload, p.qos, p.retain, p.packet_id)
            elif kind in (codec.PUBACK, codec.PUBREC, codec.PUBCOMP):
                engine.acknowledged(s, kind, codec.decode_packet_id(flags, 0, body, "acknowledgement"))
            elif kind == codec.PUBREL:
                pid = codec.decode_packet_id(flags, 2, body, "PUBREL")
                engine.pubrel(s, pid)
                link.send(codec.encode_ack(codec.PUBCOMP, pid))
            elif kind == codec.SUBSCRIBE:
                pid, topics = codec.decode_subscribe(flags, body)
                granted: list[tuple[str, int | None]] = []
                for topic_filter, qos in topics:
                    ok = codec.check_topic_filter(topic_filter) and self._topic_problem(topic_filter) is None
                    if ok and not acl.may_subscribe(identity, topic_filter):
                        engine.note_denied(s, topic_filter, f"{identity} may not subscribe to this filter")
                        ok = False
                    granted.append((topic_filter, qos if ok else None))
                engine.subscribe(s, pid, granted)
            elif kind == codec.UNSUBSCRIBE:
                pid, filters = codec.decode_unsubscribe(flags, body)
                engine.unsubscribe(s, pid, filters)
            elif kind == codec.PINGREQ:
                link.send(codec.PINGRESP)
            elif kind == codec.DISCONNECT:
                return True
            else:
                raise ProtocolViolation(f"unexpected packet type {kind} after CONNECT [MQTT-3.1.0-2]")


class LocalTransport:
    """The embedded bridge's connection to the engine, in the same process: the `Transport` contract of
    `gateway.transport.MqttTransport`, without a socket or a second broker hop.

    The bridge's session is an ordinary persistent engine session (client id `bridge.client_id`,
    role gateway), so its queue is as durable as any client's. The engine talks to it as to any
    `Link`, in encoded packets, on the event loop's thread; the bridge's calls cross over to that
    thread with `call_soon_threadsafe`.
    """

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop, client_id: str,
                 subscriptions: tuple[str, ...], on_message: Any, on_published: Any) -> None:
        self.engine, self.loop, self.client_id = engine, loop, client_id
        self.subscriptions = subscriptions
        self._on_message, self._on_published = on_message, on_published
        self._session: Session | None = None
        self._ids = itertools.count(1)
        self._connected = False

    # Link, called by the engine on the loop thread.

    def send(self, data: bytes) -> None:
        first, body = codec.split(data)
        kind = first >> 4
        if kind == codec.PUBLISH:
            p = codec.decode_publish(first & 0x0F, body)
            self._on_message(Received(p.topic, p.payload, p.qos, p.packet_id or 0, 0))
        elif kind == codec.PUBACK:
            self._on_published(int.from_bytes(body[:2], "big"))

    def close(self) -> None:
        self._connected = False

    # Transport, called by the bridge's threads.

    def start(self, timeout: float) -> None:
        asyncio.run_coroutine_threadsafe(self._attach(), self.loop).result(timeout)

    async def _attach(self) -> None:
        s, present = self.engine.attach(self.client_id, False, None, self, Identity(Role.gateway))
        self._session = s
        self.engine.subscribe(s, next(self._ids) % 65535 + 1, [(f, 1) for f in self.subscriptions])
        self.engine.connack(s, present)
        await self.engine.flush()
        self._connected = True
        log.info("bridge attached in process", extra={"ctx": {"client_id": self.client_id, "session_present": present}})

    @property
    def connected(self) -> bool:
        return self._connected

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        mid = next(self._ids) % 65535 + 1
        self.loop.call_soon_threadsafe(self._publish, topic, payload, retain, mid)
        return mid

    def _publish(self, topic: str, payload: bytes, retain: bool, mid: int) -> None:
        if self._session is not None and self._session.link is self:
            self.engine.inbound_publish(self._session, topic, payload, 1, retain, mid)

    def ack(self, message: Received) -> bool:
        if self._session is None or not self._connected:
            return False
        self.loop.call_soon_threadsafe(self.engine.acknowledged, self._session, codec.PUBACK, message.mid)
        return True

    def stop(self) -> None:
        def detach() -> None:
            if self._session is not None and self._session.link is self:
                self.engine.detach(self._session, graceful=True)

        self._connected = False
        self.loop.call_soon_threadsafe(detach)


class EmbeddedBroker:
    """The engine and amqtt's listeners, started and stopped inside the caller's running event loop."""

    def __init__(self, settings: Settings) -> None:
        if version("amqtt") != AMQTT_VERSION:
            raise BrokerStartError(
                f"fieldgate embeds amqtt {AMQTT_VERSION} but amqtt {version('amqtt')} is installed",
                hint=f"pip install amqtt=={AMQTT_VERSION}",
            )
        self.settings = settings
        self.store = BrokerStore(Path(settings.data_dir) / DB_NAME, synchronous=settings.storage.synchronous.upper())
        self.engine = Engine(self.store, settings.broker)
        self.users = UserStore(db_path(settings.data_dir))
        self.auth = Authenticator(self.users, allow_anonymous=settings.allow_anonymous)
        self._broker: FieldgateBroker | None = None

    async def start(self) -> None:
        """Restore broker.db and start listening (`address` tells where; port 0 picks a free one)."""
        await self.engine.start()
        self._broker = FieldgateBroker(amqtt_config(self.settings), self.engine, self.settings, self.auth)
        try:
            await self._broker.start()
        except BrokerError as exc:
            await self.engine.stop()
            raise BrokerStartError(
                f"the embedded broker could not listen on {self.settings.mqtt.host}:{self.settings.mqtt.port}: "
                f"{exc.__cause__ or exc}"
            ) from exc

    @property
    def listener_names(self) -> list[str]:
        return list(listeners(self.settings))

    def address(self, listener: str) -> tuple[str, int]:
        """(host, port) a listener is bound to (port 0 in the config picks a free one)."""
        assert self._broker is not None
        server = self._broker._servers[listener].instance  # amqtt keeps no public accessor for the socket
        sockets = list(server.sockets)  # asyncio.Server and websockets' Server both have .sockets
        host, port = sockets[0].getsockname()[:2]
        return host, port

    def local_transport(self) -> TransportFactory:
        """The in-process transport for the embedded bridge (`bridge.in_process`)."""
        loop = asyncio.get_running_loop()
        return lambda on_message, on_published: LocalTransport(
            self.engine, loop, self.settings.bridge.client_id, INBOUND_FILTERS, on_message, on_published)

    @property
    def bridge_url(self) -> BrokerUrl:
        """How the embedded bridge reaches this broker: loopback, with its own made-up credentials."""
        _, port = self.address("default")
        return BrokerUrl("127.0.0.1", port, BRIDGE_USER, self.auth.bridge_password)

    async def stop(self) -> None:
        if self._broker is not None:
            for server in self._broker._servers.values():  # stop accepting before closing the clients
                if server.instance is not None:
                    server.instance.close()
            await self.engine.stop()
            await self._broker.shutdown()
            self._broker = None
        self.store.close()
        self.users.close()
