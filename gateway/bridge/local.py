"""The embedded bridge's transport: the gateway inside the broker's group commit, no socket, no second hop.

`LocalTransport` fulfils the `Transport` contract of `gateway.bridge.transport` for the embedded
broker (`bridge.in_process`). The bridge's session is an ordinary persistent engine session
(client id `bridge.client_id`, role gateway, subscribed to the inbound topics), but nothing is
delivered to it: the engine puts each message routed to it into the open `Batch`, and the batch
is committed by the bridge's worker in one transaction on fieldgate.db's connection with broker.db
attached — the broker's rows, the gateway's handling of the inbound messages (its rows and its
outbox) and the deletion of the outbox rows the broker has published since the last commit. The
publishers' PUBACKs wait for that one commit. What the gateway publishes then goes back to the
engine's loop as outbox rows (`Engine.publish_outbox`); their routing is made durable, and their
rows deleted, by the next commit.

While the bridge is not attached (start-up, shut-down) the engine commits alone, and messages for
the gateway are queued as rows of its session like any offline client's; they are handed over, and
their rows deleted, in the first commit after it attaches.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from gateway.bridge.transport import Received, Receiver, TransportFactory
from gateway.broker.engine import Engine
from gateway.broker.session import Message, Session
from gateway.broker.store import Batch
from gateway.core.acl import Identity, Role
from gateway.core.lifecycle import Outgoing

log = logging.getLogger("fieldgate.bridge")


class LocalTransport:
    """The embedded bridge's connection to the engine: a `Link` the engine never delivers to (it hands the bridge
    whole batches to commit instead), and the bridge's `Transport`, whose calls cross over to the loop's thread."""

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop, client_id: str,
                 subscriptions: tuple[str, ...], bridge: Receiver) -> None:
        self.engine, self.loop, self.client_id = engine, loop, client_id
        self.subscriptions = subscriptions
        self.bridge = bridge
        self._session: Session | None = None
        self._connected = False

    # Link, called by the engine on the loop thread.

    def deliver(self, message: Message, qos: int, retain: bool, dup: bool, packet_id: int | None) -> None:
        raise AssertionError("the engine hands the embedded gateway batches, not deliveries")

    def send(self, data: bytes) -> None:
        """Control packets (CONNACK, SUBACK) mean nothing here."""

    def close(self) -> None:
        self._connected = False

    # Transport, called by the bridge's threads.

    def start(self, timeout: float | None, cancel: threading.Event) -> None:
        asyncio.run_coroutine_threadsafe(self._attach(), self.loop).result(timeout)  # the loop is ours: no wait

    async def _attach(self) -> None:
        s, present = self.engine.attach(self.client_id, False, None, self, Identity(Role.gateway), "in_process")
        self._session = s
        self.engine.subscribe(s, 1, [(f, 1) for f in self.subscriptions])
        await self.engine.flush()  # committed without the gateway: the worker starts once this returns
        self.engine.apply_in_commit(s, self._commit)
        self.engine.connack(s, present)  # what was queued for it goes into its first commit
        self._connected = True
        log.info("bridge attached in process", extra={"ctx": {"client_id": self.client_id, "session_present": present}})

    async def _commit(self, batch: Batch) -> list[tuple[int, Outgoing]]:
        return await asyncio.wrap_future(self.bridge.apply(batch))

    @property
    def connected(self) -> bool:
        return self._connected

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        raise AssertionError("the embedded bridge hands its outbox over (hand_over)")

    def hand_over(self, rows: list[tuple[int | None, Outgoing]]) -> bool:
        self.loop.call_soon_threadsafe(self.engine.publish_outbox, rows)
        return True

    def ack(self, message: Received) -> bool:
        raise AssertionError("the embedded bridge receives no deliveries to acknowledge")

    def stop(self) -> None:
        def detach() -> None:
            if self._session is not None and self._session.link is self:
                self.engine.detach(self._session, graceful=True)

        self._connected = False
        self.loop.call_soon_threadsafe(detach)


def local_transport(engine: Engine, client_id: str, subscriptions: tuple[str, ...]) -> TransportFactory:
    """The in-process transport for the embedded bridge; call from the broker's running event loop."""
    loop = asyncio.get_running_loop()
    return lambda bridge: LocalTransport(engine, loop, client_id, subscriptions, bridge)
