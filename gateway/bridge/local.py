"""The embedded bridge's transport: the broker's engine in the same process, no socket, no second hop.

`LocalTransport` fulfils the `Transport` contract of `gateway.bridge.transport` for the embedded
broker (`bridge.in_process`). The bridge's session is an ordinary persistent engine session
(client id `bridge.client_id`, role gateway), so its queue is as durable as any client's.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from typing import Any

from gateway.bridge.transport import Received, TransportFactory
from gateway.broker import codec
from gateway.broker.engine import Engine, Message, Session
from gateway.core.acl import Identity, Role

log = logging.getLogger("fieldgate.bridge")


class LocalTransport:
    """The embedded bridge's connection to the engine. The engine talks to it as to any `Link`, on the event
    loop's thread, and hands it message objects (with their publisher's identity), not encoded packets; the
    bridge's calls cross over to that thread with `call_soon_threadsafe`."""

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop, client_id: str,
                 subscriptions: tuple[str, ...], on_message: Any, on_published: Any) -> None:
        self.engine, self.loop, self.client_id = engine, loop, client_id
        self.subscriptions = subscriptions
        self._on_message, self._on_published = on_message, on_published
        self._session: Session | None = None
        self._ids = itertools.count(1)
        self._connected = False

    # Link, called by the engine on the loop thread.

    def deliver(self, message: Message, qos: int, retain: bool, dup: bool, packet_id: int | None) -> None:
        origin = message.origin
        self._on_message(Received(message.topic, message.payload, qos, packet_id or 0, 0,
                                  None if origin is None else (origin.client_id, origin.identity)))

    def send(self, data: bytes) -> None:
        if data[0] >> 4 == codec.PUBACK:  # of the bridge's own publishes; other control packets mean nothing here
            self._on_published(int.from_bytes(data[2:4], "big"))

    def close(self) -> None:
        self._connected = False

    # Transport, called by the bridge's threads.

    def start(self, timeout: float | None, cancel: threading.Event) -> None:
        asyncio.run_coroutine_threadsafe(self._attach(), self.loop).result(timeout)  # the loop is ours: no wait

    async def _attach(self) -> None:
        s, present = self.engine.attach(self.client_id, False, None, self, Identity(Role.gateway), "in_process")
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


def local_transport(engine: Engine, client_id: str, subscriptions: tuple[str, ...]) -> TransportFactory:
    """The in-process transport for the embedded bridge; call from the broker's running event loop."""
    loop = asyncio.get_running_loop()
    return lambda on_message, on_published: LocalTransport(engine, loop, client_id, subscriptions, on_message,
                                                           on_published)
