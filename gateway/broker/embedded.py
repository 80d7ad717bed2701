"""The embedded MQTT broker: amqtt 0.12.1 with a durable session layer. The only module that imports amqtt.

What amqtt still does: its listeners (TCP, TLS, WebSocket; `Broker.start`/`shutdown`) and CONNECT
parsing and validation (`BrokerProtocolHandler.init_from_connect`). Authentication and the topic
ACL are fieldgate's (`gateway.auth`, `gateway.core.acl`); amqtt's plugin set is configured empty.

What `FieldgateBroker` replaces, each behaviour of amqtt 0.12.1 named with where it lived:

- Connections: `Broker._client_connected` → `FieldgateBroker._serve`, which hands the session
  to `gateway.broker.engine.Engine` instead of `Broker._sessions`.
- Sessions, subscriptions, offline queues and retained messages lived in memory and
  `Broker.start()`/`shutdown()` cleared them → persisted in broker.db and restored at start
  (`gateway.broker.store`).
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
  and amqtt then queued nothing for it → not loaded; `gateway.auth.Authenticator` decides, and
  anonymous clients (loopback only) keep persistent sessions like anyone else.
- The listener's `max_connections` made extra clients *wait* for a slot → `broker.max_connections`
  refuses them with CONNACK 3 (server unavailable).
- `BrokerProtocolHandler.init_from_connect` builds a protocol handler and an amqtt `Session` per
  client (asyncio queues and events, a `transitions` state machine: about 30 KB) → fieldgate reads
  the CONNECT fields from them and keeps neither for the connection's lifetime
  (`FieldgateBroker._connection`; 10,000 idle clients take 180 MB instead of 500).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
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

from gateway.auth import BRIDGE_USER, Authenticator
from gateway.bridge.transport import BrokerUrl
from gateway.broker import codec
from gateway.broker.codec import ProtocolViolation
from gateway.broker.engine import Engine
from gateway.broker.session import Message, Session
from gateway.broker.store import DB_NAME, BrokerStore
from gateway.config import Settings
from gateway.core import acl, contract
from gateway.core.acl import Role
from gateway.errors import BrokerStartError
from gateway.store.database import location_of
from gateway.store.queries import Queries

log = logging.getLogger("fieldgate.broker")

#: The amqtt release whose internals this module relies on; tests/test_broker.py checks it.
AMQTT_VERSION = "0.12.1"
#: Seconds a new connection has to send its CONNECT.
CONNECT_TIMEOUT = 10.0


#: amqtt's listener names → the names fieldgate shows (ready line, metrics).
LISTENER_LABELS = {"default": "mqtt", "tls": "tls", "websocket": "ws"}


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


class Outbound:
    """What the broker's connections send, shared between them (one per broker, on its loop). A message fanned out
    to many clients is encoded once: the head of its PUBLISH (`codec.publish_head`) is kept for the next
    subscribers, each of which adds only its packet id. The connections given bytes during one turn of the event
    loop are written at its end, in one callback for all of them."""

    __slots__ = ("_last", "_loop", "_waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._last: tuple[Message, int, bool, bool, bytes] | None = None
        self._waiting: list[Connection] = []

    def head(self, message: Message, qos: int, retain: bool, dup: bool) -> bytes:
        last = self._last
        if last is not None and last[0] is message and last[1] == qos and last[2] == retain and last[3] == dup:
            return last[4]
        head = codec.publish_head(message.topic, len(message.payload), qos, retain, dup)
        self._last = (message, qos, retain, dup, head)
        return head

    def wait(self, link: Connection) -> None:
        """`link` has bytes to write at the end of this loop turn."""
        if not self._waiting:
            self._loop.call_soon(self._write)
        self._waiting.append(link)

    def _write(self) -> None:
        waiting, self._waiting = self._waiting, []
        for link in waiting:
            try:
                link.write()
            except Exception:  # its transport is in a state it should not be in: drop it, keep writing the others
                log.debug("write failed", exc_info=True)
                link.close()


class Connection:
    """One client's network connection after CONNECT: reads packets, writes bytes, watches keep-alive."""

    __slots__ = ("_dirty", "_drained", "_flusher", "_grace", "_loop", "_outbound", "_outgoing", "_timer",
                 "_transport", "closed", "last_read", "reader", "timed_out", "writer")

    def __init__(self, reader: ReaderAdapter, writer: WriterAdapter, transport: asyncio.BaseTransport,
                 keepalive: int, outbound: Outbound) -> None:
        self.reader = reader
        self.writer = writer
        self._transport = transport
        self._outbound = outbound
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._outgoing: list[bytes] = []
        # A WebSocket sends what was written only when drained: one task per such connection does that. A TCP
        # connection's transport sends as it can by itself, and needs no task (nor its memory).
        self._dirty: asyncio.Event | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._drained = isinstance(writer, StreamWriterAdapter)
        self.last_read = self._loop.time()
        self._grace = keepalive * 1.5  # [MQTT-3.1.2-24]
        self._timer = self._loop.call_later(self._grace, self._watchdog) if keepalive else None
        self.timed_out = False

    def send(self, data: bytes) -> None:
        """Queue bytes for the client; what is queued during one turn of the event loop is written at its end, in
        one write (a commit's PUBACKs, a burst of deliveries), in order (`Outbound`)."""
        if (outgoing := self._queue()) is not None:
            outgoing.append(data)

    def deliver(self, message: Message, qos: int, retain: bool, dup: bool, packet_id: int | None) -> None:
        """Queue a PUBLISH as its parts: the head its message shares with the other subscribers', this client's
        packet id, the payload."""
        if (outgoing := self._queue()) is None:
            return
        head = self._outbound.head(message, qos, retain, dup)
        if packet_id is None:
            outgoing += (head, message.payload)
        else:
            outgoing += (head, codec.encode_packet_id(packet_id), message.payload)

    def _queue(self) -> list[bytes] | None:
        """The bytes to write at the end of this loop turn; None once the connection is gone."""
        if self.closed:
            return None
        if self._transport.is_closing():  # the peer is gone: writing would only make asyncio complain per packet
            self.close()
            return None
        if not self._outgoing:
            self._outbound.wait(self)
        return self._outgoing

    def write(self) -> None:
        """Write what was queued (`Outbound` calls this at the end of the loop turn)."""
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        if self.closed:
            return
        self.writer.write(data)
        if not self._drained:
            if self._dirty is None:
                self._dirty = asyncio.Event()
                self._flusher = asyncio.create_task(self._flush(self._dirty))
            self._dirty.set()

    async def _flush(self, dirty: asyncio.Event) -> None:
        try:
            while not self.closed:
                await dirty.wait()
                dirty.clear()
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
        if self._flusher is not None:
            self._flusher.cancel()
        self._transport.abort()

    async def read_exactly(self, n: int) -> bytes:
        data = await self.reader.read(n)
        if len(data) < n:
            raise EOFError
        return data

    async def read_packet(self, max_bytes: int) -> tuple[int, int, bytes]:
        """(packet type, flags, body) of the next packet."""
        first, byte = await self.read_exactly(2)  # every packet's fixed header has at least 2 bytes
        length, shift = byte & 0x7F, 7
        while byte & 0x80:
            if shift == 28:
                raise ProtocolViolation("remaining length longer than 4 bytes")
            byte = (await self.read_exactly(1))[0]
            length += (byte & 0x7F) << shift
            shift += 7
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
        self.outbound = Outbound(asyncio.get_running_loop())
        self._hosts = {name: cfg["bind"].rsplit(":", 1)[0] for name, cfg in config["listeners"].items()}

    # Entry points of amqtt's listeners: keep a way to abort the transport, then serve.

    async def stream_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               listener_name: str) -> None:
        await self._serve(listener_name, StreamReaderAdapter(reader), StreamWriterAdapter(writer), writer.transport)

    async def ws_connected(self, websocket: Any, listener_name: str) -> None:
        await self._serve(listener_name, WebSocketsReader(websocket), WebSocketsWriter(websocket), websocket.transport)

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

    async def _serve(self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter,
                     transport: asyncio.BaseTransport) -> None:
        server = self._servers.get(listener_name)
        if server is None:
            transport.abort()
            return
        await self._connection(listener_name, reader, writer, transport)

    async def _connection(self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter,
                          transport: asyncio.BaseTransport) -> None:
        abort = transport.abort
        peer = writer.get_peer_info()
        try:
            incoming = (await asyncio.wait_for(
                BrokerProtocolHandler.init_from_connect(reader, writer, self.plugins_manager), CONNECT_TIMEOUT
            ))[1]
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
        # What the connection needs of CONNECT, kept as plain values: amqtt's handler and session objects (queues,
        # events, a state machine: about 30 KB a client) are not kept for the connection's lifetime.
        keepalive, clean = incoming.keep_alive, bool(incoming.clean_session)
        del incoming
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
        link = Connection(reader, writer, transport, keepalive, self.outbound)
        self.links.add(link)
        session, present = self.engine.attach(client_id, clean, will, link, identity,
                                              LISTENER_LABELS.get(listener_name, listener_name))
        log.debug("client connected", extra={"ctx": {**ctx, "identity": str(identity),
                                                     "clean": clean, "session_present": present}})
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
                log.info("keep-alive expired", extra={"ctx": {**ctx, "keepalive": keepalive}})
            self.links.discard(link)
            if session.link is link:
                self.engine.detach(session, graceful=graceful, how="timeout" if link.timed_out else None)
            link.close()

    def _topic_problem(self, topic: str) -> str | None:
        """Why a topic (name or filter) breaks the configured limits, or None."""
        limits = self.fg.broker
        if len(topic.encode()) > limits.max_topic_length:
            return f"topic longer than broker.max_topic_length ({limits.max_topic_length} bytes)"
        if topic.count("/") + 1 > limits.max_topic_levels:
            return f"topic deeper than broker.max_topic_levels ({limits.max_topic_levels})"
        return None

    def _off_contract(self, s: Session, topic: str, why: str, *, count: bool = True) -> None:
        """Count, log and answer a publish that goes nowhere the gateway reads; the answer goes to the sender's
        errors topic: its user's (courier, shop, order system), else the one its topic names, else its client id's."""
        identity = s.identity
        errors: str | None = None
        if identity.role == Role.courier and identity.id:
            errors = contract.courier_topic(identity.id, "errors")
        elif identity.role == Role.shop and identity.id:
            errors = contract.shop_topic(identity.id, "errors")
        elif identity.role == Role.ordersys:
            errors = contract.ORDERSYS_ERRORS
        else:
            errors = contract.errors_topic_named_by(topic) or (
                contract.client_errors_topic(s.client_id) if contract.is_id(s.client_id) else None)
        self.engine.note_off_contract(s, topic, why, errors, count=count)

    async def _packets(self, link: Connection, s: Session) -> bool:
        """Serve packets until the client disconnects; True if it sent DISCONNECT."""
        engine, max_bytes, identity = self.engine, self.fg.broker.max_packet_bytes, s.identity
        # Uploads (photos, voice notes) may be larger than any other packet, on media topics: up to media.max_bytes,
        # and up to twice that still read whole, so that a file a little too large is answered (a Rejection) rather
        # than cut off.
        hard_limit = max(max_bytes, 2 * self.fg.media.max_bytes + 1024)
        limited = self.fg.broker.max_publish_rate > 0 and identity.role not in (Role.gateway, Role.local)
        bucket = RateLimit(self.fg.broker.max_publish_rate, self.fg.broker.publish_burst) if limited else None
        watch_contract = identity.role not in (Role.gateway, Role.operator)
        paced = identity.role != Role.gateway
        while True:
            if paced and not engine.reading.is_set():  # backpressure: the gateway's backlog is full
                await engine.reading.wait()
            kind, flags, body = await link.read_packet(hard_limit)
            if kind == codec.PUBLISH:
                p = codec.decode_publish(flags, body)
                if len(body) > max_bytes and not contract.is_media_upload(p.topic):
                    raise ProtocolViolation(f"packet of {len(body)} bytes exceeds broker.max_packet_bytes "
                                            f"({max_bytes}); only media uploads may be larger")
                if bucket is not None and (wait := bucket.delay()) > 0:
                    engine.note_throttled(s, wait)
                    await asyncio.sleep(wait)  # throttle this client only: its socket is simply read later
                problem = self._topic_problem(p.topic)
                if problem is not None or not acl.may_publish(identity, p.topic):
                    engine.note_denied(s, p.topic, problem or f"{identity} may not publish to this topic")
                    if problem is None:
                        self._off_contract(s, p.topic, f"{identity} may not publish to {p.topic}", count=False)
                    if p.qos:  # 3.1.1 has no negative acknowledgement: acknowledge and drop
                        link.send(codec.encode_ack(codec.PUBACK if p.qos == 1 else codec.PUBREC, p.packet_id or 0))
                    continue
                if watch_contract and not contract.in_contract(p.topic):
                    self._off_contract(s, p.topic, f"topic {p.topic!r} is not part of the fieldgate topic contract; "
                                       "nobody in the gateway reads it")
                engine.inbound_publish(s, p.topic, p.payload, p.qos, p.retain, p.packet_id)
            elif len(body) > max_bytes:
                raise ProtocolViolation(f"packet of {len(body)} bytes exceeds broker.max_packet_bytes ({max_bytes})")
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


def _listen_error(exc: BrokerError) -> BrokerStartError:
    """amqtt's failure to start, said in one line: which address, what went wrong, what to do."""
    cause = exc.__cause__
    if not isinstance(cause, OSError):
        return BrokerStartError(f"the embedded broker could not start: {cause or exc}")
    where = re.search(r"\('([^']*)', (\d+)\)", str(cause))
    address = f" on {where.group(1)}:{where.group(2)}" if where else ""
    why = (cause.strerror or str(cause)).lower()
    if cause.errno == errno.EADDRINUSE:
        hint = "Another program (another broker?) listens there: stop it, or choose a free port (--port)."
    elif cause.errno == errno.EACCES:
        hint = "Ports below 1024 need privileges: use 1883 (or 8883 for TLS), or run as a service that may."
    elif cause.errno == errno.EADDRNOTAVAIL:
        hint = "That address is not one of this machine's: use 127.0.0.1, 0.0.0.0 or an address it has (--host)."
    else:
        hint = "Check mqtt.host/mqtt.port (and the tls and websocket listeners) in broker.yaml."
    return BrokerStartError(f"the embedded broker could not listen{address}: {why}", hint=hint)


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
        self.users_db: Queries | None = None  # opened at start, read-only: the bridge's Store created it
        self.auth: Authenticator | None = None
        self._broker: FieldgateBroker | None = None

    async def start(self) -> None:
        """Restore broker.db and start listening (`address` tells where; port 0 picks a free one)."""
        self.users_db = Queries(location_of(self.settings))
        self.auth = Authenticator(self.users_db.users, allow_anonymous=self.settings.allow_anonymous)
        await self.engine.start()
        broker = FieldgateBroker(amqtt_config(self.settings), self.engine, self.settings, self.auth)
        try:
            await broker.start()
        except BrokerError as exc:
            for server in broker._servers.values():  # the listeners amqtt opened before one failed
                if server.instance is not None:
                    server.instance.close()
            await self.engine.stop()
            raise _listen_error(exc) from exc
        self._broker = broker

    @property
    def listening(self) -> bool:
        """The listeners are open (between start and stop)."""
        return self._broker is not None

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

    @property
    def bridge_url(self) -> BrokerUrl:
        """How the embedded bridge reaches this broker: loopback, with its own made-up credentials."""
        assert self.auth is not None
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
        if self.users_db is not None:
            self.users_db.close()
