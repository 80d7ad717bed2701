"""Live updates for the pages: what each commit published, fanned out to the pages watching it.

The bridge calls `Gateway.on_commit` after each commit, on its own thread; the HTTP side hands the
messages to `Hub.publish` on its event loop. Each page's event stream is a `Watcher` that says what
it watches (a shop's orders, chats and couriers, or one order) and collects the ids that changed.
The stream then reads what it shows from the store and sends it: a page shows only what is
committed, and a burst of GPS fixes costs a page one read per wake-up, not one per fix.

Why Server-Sent Events rather than MQTT over WebSocket: the pages are served by the HTTP listener
with its session cookie, the tracking page's visitor has no MQTT user at all, and what a page may
see is decided here per page (a shop's own orders and couriers; one order, with the courier's
position only between pickup and delivery), so the broker's WebSocket listener stays closed to
browsers. EventSource reconnects by itself; a page re-reads its snapshot when it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from gateway.core.lifecycle import Outgoing

#: Makes a stream's next events from what changed (None: nothing did, for a while).
Step = Callable[["Changes | None"], Awaitable[list[str]]]


@dataclass(frozen=True)
class Touch:
    """What one published message is about."""

    shop_id: str | None = None
    order_id: str | None = None
    courier_id: str | None = None
    chat: bool = False


def touch_of(message: Outgoing) -> Touch | None:
    """What a page might show differently after this message; None if nothing (tasks, acks, errors, ...)."""
    parts = message.topic.split("/")
    match parts:
        case ["orders", order_id, "state"] if message.payload:
            return Touch(shop_id=_field(message.payload, "shop_id"), order_id=order_id)
        case ["shops", shop_id, "orders"]:
            return Touch(shop_id=shop_id, order_id=_field(message.payload, "order_id"))
        case ["shops", shop_id, "chat"]:
            return Touch(shop_id=shop_id, order_id=_field(message.payload, "order_id"), chat=True)
        case ["couriers", courier_id, "location"]:
            return Touch(courier_id=courier_id)
    return None


def _field(payload: bytes, name: str) -> str | None:
    try:
        value = json.loads(payload).get(name)
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


@dataclass
class Changes:
    """The ids that changed since a watcher last looked."""

    orders: set[str] = field(default_factory=set)
    couriers: set[str] = field(default_factory=set)
    chats: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.orders or self.couriers or self.chats)


class Watcher:
    """One page's stream: a shop's board (`shop_id`, and `couriers`, kept up to date by the stream) or one
    order's tracking page (`order_id`)."""

    def __init__(self, *, shop_id: str | None = None, order_id: str | None = None) -> None:
        self.shop_id = shop_id
        self.order_id = order_id
        self.couriers: set[str] = set()
        self._changes = Changes()
        self._wake = asyncio.Event()
        self.closed = False

    def offer(self, touch: Touch) -> None:
        c = self._changes
        if self.order_id is not None:
            if touch.order_id == self.order_id:
                (c.chats if touch.chat else c.orders).add(self.order_id)
        elif touch.courier_id is not None:
            if touch.courier_id in self.couriers:
                c.couriers.add(touch.courier_id)
        elif touch.shop_id == self.shop_id and touch.order_id is not None:
            (c.chats if touch.chat else c.orders).add(touch.order_id)
        if c:
            self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def changes(self, every: float, settle: float = 0.1) -> Changes | None:
        """The next changes (gathered for `settle` seconds after the first), or None after `every` seconds
        without any (time for a keep-alive) or once closed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), every)
        if self.closed or not self._changes:
            self._wake.clear()
            return None
        await asyncio.sleep(settle)
        found, self._changes = self._changes, Changes()
        self._wake.clear()
        return found


class Hub:
    """The watchers of one HTTP side. Touched only on its event loop."""

    def __init__(self) -> None:
        self._watchers: set[Watcher] = set()
        self.closed = False

    @property
    def watched(self) -> bool:
        """Is any page open? (Read from the bridge's thread too: a stale answer costs one wake-up at most.)"""
        return bool(self._watchers)

    def publish(self, messages: list[Outgoing]) -> None:
        for touch in filter(None, map(touch_of, messages)):
            for watcher in self._watchers:
                watcher.offer(touch)

    @contextlib.contextmanager
    def watch(self, watcher: Watcher) -> Iterator[Watcher]:
        self._watchers.add(watcher)
        try:
            yield watcher
        finally:
            self._watchers.discard(watcher)

    def close(self) -> None:
        """End every stream (the HTTP side is stopping)."""
        self.closed = True
        for watcher in self._watchers:
            watcher.close()


def event(name: str, data: str) -> str:
    """One Server-Sent Event (`data` is JSON: one line)."""
    return f"event: {name}\ndata: {data}\n\n"


async def stream(hub: Hub, watcher: Watcher, first: Step, then: Step, every: float) -> AsyncIterator[str]:
    """A page's event stream: `first()`'s events, then `then(changes)`'s at each change, and `then(None)`'s
    every `every` seconds without one (a refresh, or a keep-alive comment), until the page goes away or the
    gateway stops."""
    with hub.watch(watcher):
        for chunk in await first(None):
            yield chunk
        while not (watcher.closed or hub.closed):
            changes = await watcher.changes(every)
            if watcher.closed or hub.closed:
                return
            for chunk in await then(changes) or [": keep-alive\n\n"]:
                yield chunk
