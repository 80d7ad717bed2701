"""The bridge's transports. `MqttTransport` is the only code that imports paho-mqtt.

The bridge talks to its broker through the `Transport` contract below. Two implementations:
`MqttTransport` (any MQTT 3.1.1 broker, over the network: it delivers inbound messages
unacknowledged and numbers outbound ones so their PUBACK can be matched) and
`gateway.bridge.local.LocalTransport` (the embedded broker, in the same process: the broker hands
the bridge whole batches to commit with its own rows, `Receiver.apply`, and takes the outbox back
in one call, `Transport.hand_over`).


`MqttTransport` is a persistent-session (clean_session=False) MQTT 3.1.1 client that
hands every inbound message to a callback *without* acknowledging it: the caller PUBACKs with
`ack()` once the message is committed. paho runs its network loop in its own thread and
reconnects by itself; callbacks arrive on that thread, so they must only hand work over.

Each connection gets a generation number. A message received on generation N is only
acknowledged while generation N is still connected: after a reconnect the broker re-sends it
(DUP=1), and the packet id it used may already name a different message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from gateway.broker.store import Batch
from gateway.core.acl import Identity
from gateway.core.lifecycle import Outgoing
from gateway.errors import TransportError

log = logging.getLogger("fieldgate.transport")

#: Longest wait between two attempts to reach a broker that is down, in seconds.
RECONNECT_MAX_SECONDS = 30


@dataclass(frozen=True)
class BrokerUrl:
    """mqtt://[user[:password]@]host[:port]"""

    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "tcp"):
            raise TransportError(f"unsupported broker URL scheme {parts.scheme!r} in {url!r}",
                                 hint="Use mqtt://HOST:PORT.")
        if not parts.hostname:
            raise TransportError(f"broker URL {url!r} has no host", hint="Use mqtt://HOST:PORT.")
        try:
            port = parts.port or 1883
        except ValueError as exc:
            raise TransportError(f"broker URL {url!r} has a bad port") from exc
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def __str__(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


class Transport(Protocol):
    """What the bridge needs of a connection to its broker."""

    def start(self, timeout: float | None, cancel: threading.Event) -> None: ...

    @property
    def connected(self) -> bool: ...

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int: ...

    def hand_over(self, rows: list[tuple[int | None, Outgoing]]) -> bool:
        """Give the broker outbox rows to publish, their rows deleted by its next commit, in one call (the embedded
        broker). False: this transport publishes one message at a time (`publish`) and reports each PUBACK."""
        ...

    def ack(self, message: Received) -> bool: ...

    def stop(self) -> None: ...


class Receiver(Protocol):
    """The bridge as its transports see it: where inbound messages and the PUBACKs of its publishes go."""

    def received(self, message: Received) -> None: ...

    def published(self, mid: int) -> None: ...

    def apply(self, batch: Batch) -> Future[list[tuple[int, Outgoing]]]:
        """The embedded broker's group commit, with the gateway's handling of its inbound messages, on the bridge's
        worker; the result is the outbox rows that handling queued."""
        ...


#: Builds the bridge's transport, given the bridge.
TransportFactory = Callable[[Receiver], Transport]


@dataclass(frozen=True)
class Received:
    """An inbound PUBLISH, not yet acknowledged. `origin` is (client id, identity) of its publisher where the
    transport knows it (the embedded broker, in process); None over MQTT."""

    topic: str
    payload: bytes
    qos: int
    mid: int
    generation: int
    origin: tuple[str, Identity] | None = None


def wait_connected(connected: threading.Event, timeout: float | None, cancel: threading.Event) -> str | None:
    """Wait until `connected` is set; None then, else why the wait ended: `timeout` seconds (None: never) passed,
    or `cancel` was set."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not connected.wait(0.2):
        if cancel.is_set():
            return "the bridge was stopped"
        if deadline is not None and time.monotonic() > deadline:
            return f"{timeout:.0f} s passed"
    return None


class MqttTransport:
    """A paho client kept behind four calls: start, publish, ack, stop."""

    def __init__(
        self,
        url: BrokerUrl,
        client_id: str,
        *,
        keepalive: int,
        max_in_flight: int,
        subscriptions: tuple[str, ...],
        on_message: Callable[[Received], None],
        on_published: Callable[[int], None],
        on_connected: Callable[[bool], None] = lambda session_present: None,
    ) -> None:
        self.url = url
        self.keepalive = keepalive
        self.subscriptions = subscriptions
        self._on_message = on_message
        self._on_published = on_published
        self._on_connected = on_connected
        self._generation = 0
        self._attempts = 0
        self._connected = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=paho.MQTTv311,
            manual_ack=True,
        )
        self._client.max_inflight_messages_set(max_in_flight)
        self._client.reconnect_delay_set(min_delay=1, max_delay=RECONNECT_MAX_SECONDS)
        if url.username:
            self._client.username_pw_set(url.username, url.password)
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_message = self._handle_message
        self._client.on_publish = self._handle_publish
        self._client.on_connect_fail = self._handle_connect_fail

    # ---------------------------------------------------------------- paho callbacks (paho's thread)

    def _handle_connect(self, client: paho.Client, _u: object, flags: paho.ConnectFlags,
                        reason: paho.ReasonCode, _p: object) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason, extra={"ctx": {"broker": str(self.url)}})
            return
        self._generation += 1
        self._attempts = 0
        client.subscribe([(topic, 1) for topic in self.subscriptions])
        log.info(
            "bridge connected",
            extra={"ctx": {"broker": str(self.url), "session_present": flags.session_present}},
        )
        self._connected.set()
        self._on_connected(flags.session_present)

    def _handle_disconnect(self, _c: paho.Client, _u: object, _f: object, reason: paho.ReasonCode,
                           _p: object) -> None:
        self._connected.clear()
        self._generation += 1
        level = logging.WARNING if reason.is_failure else logging.INFO
        log.log(level, "bridge disconnected: %s", reason, extra={"ctx": {"broker": str(self.url)}})

    def _handle_connect_fail(self, _c: paho.Client, _u: object) -> None:
        self._attempts += 1
        log.warning("cannot reach the broker; retrying with backoff (up to %d s apart)", RECONNECT_MAX_SECONDS,
                    extra={"ctx": {"broker": str(self.url), "attempt": self._attempts}})

    def _handle_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        self._on_message(
            Received(
                topic=msg.topic,
                payload=bytes(msg.payload),
                qos=msg.qos,
                mid=msg.mid,
                generation=self._generation,
            )
        )

    def _handle_publish(self, _c: paho.Client, _u: object, mid: int, _r: object, _p: object) -> None:
        self._on_published(mid)

    # ---------------------------------------------------------------- API

    def start(self, timeout: float | None, cancel: threading.Event) -> None:
        """Start paho's network thread and wait until connected: while the broker is down, paho retries with
        backoff (each attempt logged). Raise TransportError after `timeout` seconds (None: never), or once
        `cancel` is set."""
        self._client.connect_async(self.url.host, self.url.port, keepalive=self.keepalive)
        self._client.loop_start()
        why = wait_connected(self._connected, timeout, cancel)
        if why is not None:
            self.stop()
            raise TransportError(f"{self.url} did not accept the bridge's connection before {why}")

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        """Queue a QoS-1 publish; paho sends it now or after reconnecting. Returns its packet id."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise TransportError(f"publish to {topic} failed: {paho.error_string(info.rc)}")
        return info.mid

    def ack(self, message: Received) -> bool:
        """PUBACK a committed message, unless its connection is gone (the broker will re-send it)."""
        if message.qos == 0 or message.generation != self._generation or not self.connected:
            return False
        self._client.ack(message.mid, message.qos)
        return True

    def hand_over(self, rows: list[tuple[int | None, Outgoing]]) -> bool:
        return False

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def mqtt_transport(url: BrokerUrl, client_id: str, *, keepalive: int, max_in_flight: int,
                   subscriptions: tuple[str, ...]) -> TransportFactory:
    """A factory of MqttTransports to `url`, for `Bridge`."""
    return lambda bridge: MqttTransport(
        url, client_id, keepalive=keepalive, max_in_flight=max_in_flight, subscriptions=subscriptions,
        on_message=bridge.received, on_published=bridge.published,
    )


class MqttClient:
    """A plain QoS-1 MQTT client for fieldgate's own tools (`fieldgate simulate`): connect, subscribe, publish,
    messages handed to a callback on paho's thread (which must only hand them over)."""

    def __init__(self, url: BrokerUrl, client_id: str = "", *, clean_session: bool = True,
                 will: tuple[str, bytes, bool] | None = None,
                 on_message: Callable[[str, bytes], None] = lambda topic, payload: None) -> None:
        self.url = url
        self._connected = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session,
                                   protocol=paho.MQTTv311)
        self._client.max_inflight_messages_set(100)
        if url.username:
            self._client.username_pw_set(url.username, url.password)
        if will is not None:
            self._client.will_set(will[0], will[1], qos=1, retain=will[2])
        self._client.on_connect = lambda _c, _u, _f, reason, _p: reason.is_failure or self._connected.set()
        self._client.on_disconnect = lambda *_: self._connected.clear()
        self._client.on_message = lambda _c, _u, msg: on_message(msg.topic, bytes(msg.payload))

    def connect(self, timeout: float = 10.0) -> None:
        try:
            self._client.connect(self.url.host, self.url.port, keepalive=30)
        except OSError as exc:
            raise TransportError(f"cannot connect to {self.url}: {exc}") from exc
        self._client.loop_start()
        if not self._connected.wait(timeout):
            self.close()
            raise TransportError(f"{self.url} did not accept the connection within {timeout:.0f} s")

    def subscribe(self, *filters: str) -> None:
        self._client.subscribe([(f, 1) for f in filters])

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, timeout: float | None = None) -> bool:
        """Publish at QoS 1; with `timeout`, wait that long for the PUBACK and say whether it came."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if timeout is None:
            return True
        try:
            info.wait_for_publish(timeout)
        except (ValueError, RuntimeError):
            return False
        return info.is_published()

    def drop(self) -> None:
        """Vanish without a DISCONNECT (out of coverage): the broker publishes the will."""
        sock = self._client.socket()
        if sock is not None:
            sock.close()
        self._client.loop_stop()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
