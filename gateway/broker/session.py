"""One client's session in the embedded broker, as the engine keeps it in memory: its subscriptions, its queue
and in-flight window, its packet ids; the messages and deliveries it holds; and the `Link` to its connection.
What was queued for it before the broker started stays in broker.db (`shelved`) until it is needed.

Plain data: the engine (`gateway.broker.engine`) is what changes it, on the broker's event loop.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Protocol

from gateway.core.acl import Identity, Role


class Link(Protocol):
    """What the session layer needs of a connection: a network one (`gateway.broker.embedded.Connection`)
    encodes; the embedded bridge's (`gateway.bridge.local.LocalTransport`) takes the message as it is."""

    def deliver(self, message: Message, qos: int, retain: bool, dup: bool, packet_id: int | None) -> None: ...

    def send(self, data: bytes) -> None: ...  # an encoded control packet (CONNACK, PUBACK, SUBACK, ...)

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Origin:
    """Who published a message: its client id and authenticated identity. Kept in memory only (not in broker.db):
    what is delivered after a restart has no origin."""

    client_id: str
    identity: Identity


@dataclass(slots=True, eq=False)
class Message:
    topic: str
    payload: bytes
    qos: int
    id: int | None = None  # its `messages` row, once a persistent session needs it
    refs: int = 0  # queue rows that point at it
    origin: Origin | None = None


@dataclass(slots=True, eq=False)
class Delivery:
    message: Message
    qos: int
    queue_id: int | None = None  # None: not stored (QoS 0, or a clean session)
    retain: bool = False  # sent because of a new subscription to a retained topic
    dup: bool = False  # may have been sent before: the next send carries DUP=1
    phase: int = 0  # 0 not sent, 1 PUBLISH sent, 2 PUBREC received and PUBREL sent (QoS 2)
    packet_id: int = 0  # kept from the first send to the last [MQTT-4.4.0-1]
    sent_at: float = 0.0


@dataclass(eq=False, slots=True)
class Session:
    client_id: str
    clean: bool
    subscriptions: dict[str, int] = field(default_factory=dict)
    queue: deque[Delivery] = field(default_factory=deque)
    inflight: OrderedDict[int, Delivery] = field(default_factory=OrderedDict)
    inbound_qos2: set[int] = field(default_factory=set)  # PUBREC sent, PUBREL awaited
    packet_ids: set[int] = field(default_factory=set)  # held by deliveries sent at least once
    identity: Identity = field(default_factory=lambda: Identity(Role.local))
    listener: str = ""  # the listener of its connection (mqtt, tls, ws; in_process for the embedded bridge)
    link: Link | None = None
    ready: bool = False  # CONNACK sent: deliveries may flow
    window: int = 20  # most deliveries in flight (0: no limit); set at attach
    bounded: bool = True  # subject to max_queued_messages / max_queued_bytes; set at attach
    will: tuple[str, bytes, int, bool] | None = None
    last_seen: float = 0.0
    pending_bytes: int = 0  # of every delivery queued, in flight or shelved
    #: Queued rows in broker.db from before the start, not read yet: they come before everything in `queue`, and
    #: are read when first needed (`Engine._unshelve`).
    shelved: int = 0
    dropped: int = 0
    denied: int = 0
    off_contract: int = 0  # publishes to topics outside the topic contract
    _last_drop_log: float = 0.0
    _last_deny_log: float = 0.0
    _last_off_contract: dict[str, float] = field(default_factory=dict)  # topic -> when last logged and answered
    _last_throttle_log: float = 0.0
    _packet_id: int = 0

    @property
    def persistent(self) -> bool:
        return not self.clean

    def pending(self) -> int:
        return len(self.queue) + len(self.inflight) + self.shelved

    def next_packet_id(self) -> int:
        for _ in range(65535):
            self._packet_id = self._packet_id % 65535 + 1
            if self._packet_id not in self.packet_ids:
                self.packet_ids.add(self._packet_id)
                return self._packet_id
        raise RuntimeError(f"client {self.client_id} has 65535 messages in flight")
