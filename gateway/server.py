"""Running fieldgate: the embedded broker, the bridge and the HTTP side in one process, or the bridge alone
(with its HTTP side) against another broker.

Both hold the data directory's lock (`gateway.store.datadir`) for as long as they run, so a second
gateway on the same directory exits at once; bridges sharing a PostgreSQL store (`storage.url`) may
share one, the database coordinating them. `serve` prints one `fieldgate ready …` line to
stderr once clients can connect (naming every listener, `http=` included), and stops cleanly on
SIGINT or SIGTERM: the HTTP side finishes its requests, the bridge its batch, then the broker
shuts down.

Threads (docs/architecture.md has the whole table): the event loop of the broker (amqtt's
listeners and the session engine) is the main thread's; the bridge's worker is the one writer of
fieldgate.db; the HTTP side has its own thread and loop (`gateway.http.server`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from gateway import metrics
from gateway.bridge.amqp import PARTITIONS, EveryPartition, Ownership
from gateway.bridge.local import local_transport
from gateway.bridge.transport import TransportFactory
from gateway.bridge.worker import Bridge, over_mqtt
from gateway.broker.embedded import LISTENER_LABELS, EmbeddedBroker
from gateway.config import Settings
from gateway.core.contract import EMBEDDED_FILTERS, INBOUND_FILTERS
from gateway.store import datadir, sqlite
from gateway.store.database import DB_NAME, is_postgres, location_of

if TYPE_CHECKING:
    from gateway.http.server import HttpSide

log = logging.getLogger("fieldgate")
T = TypeVar("T")

#: Longest a metrics scrape waits for the broker's loop to count its sessions.
SCRAPE_TIMEOUT_SECONDS = 2.0


def _check_files(settings: Settings, *others: str) -> None:
    """Move a corrupt or foreign SQLite file aside before opening it: fieldgate.db (unless the store is
    PostgreSQL's) and `others` in the data directory."""
    names = (*(() if is_postgres(location_of(settings)) else (DB_NAME,)), *others)
    for name in names:
        sqlite.ensure_usable(settings.data_dir / name)


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM; install it before announcing readiness."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _http_side(settings: Settings, bridge: Bridge, checks: Callable[[], dict[str, bool]]) -> HttpSide | None:
    """The HTTP side (bound, not started: the bridge now knows the tracking links' address), or None when
    http.enabled is off; FastAPI and uvicorn load only if it is on.
    `checks` says whether the broker and the bridge are ready (the side adds its databases)."""
    if not settings.http.enabled:
        return None
    from gateway.http.server import HttpSide

    side = HttpSide(settings, bridge, checks)
    metrics.RUNTIME.store = side.gauges
    return side


def _on_loop(loop: asyncio.AbstractEventLoop, work: Callable[[], T]) -> T:
    """Run `work` on the broker's loop (the engine's state is that thread's) and wait for its result."""

    async def run() -> T:
        return work()

    return asyncio.run_coroutine_threadsafe(run(), loop).result(SCRAPE_TIMEOUT_SECONDS)


async def _serve(settings: Settings) -> None:
    stop = _stop_on_signals()
    _check_files(settings, "broker.db")
    broker = EmbeddedBroker(settings)
    if settings.bridge.in_process and not is_postgres(location_of(settings)):
        transport = local_transport(broker.engine, settings.bridge.client_id, INBOUND_FILTERS + EMBEDDED_FILTERS)
    else:
        transport = over_mqtt(settings, lambda: broker.bridge_url, embedded=True)
    bridge = Bridge(settings, transport)  # creates or migrates fieldgate.db, which the broker reads users from
    loop = asyncio.get_running_loop()
    http = None
    try:
        http = _http_side(settings, bridge, lambda: {"broker": broker.listening,
                                                     "bridge": bridge.running and bridge.connected})
        await broker.start()
        await asyncio.to_thread(bridge.start)
        if http is not None:
            await asyncio.to_thread(http.start)
        metrics.RUNTIME.connections = lambda: _on_loop(loop, broker.engine.connections)
        metrics.RUNTIME.sessions = lambda: _on_loop(loop, broker.engine.queue_totals)
        bound = {name: "{}:{}".format(*broker.address(listener)) for listener, name in LISTENER_LABELS.items()
                 if listener in broker.listener_names}
        if http is not None:
            bound["http"] = "{}:{}".format(*http.address)
        log.info("fieldgate ready", extra={"ctx": {**bound, "anonymous": settings.allow_anonymous,
                                                   "db": bridge.store.where}})
        await stop.wait()
        log.info("stopping")
    finally:
        # The HTTP side finishes its requests; the broker disconnects its clients and commits what they sent, the
        # embedded gateway's last commit included (its worker still runs); then the bridge stops.
        metrics.RUNTIME.connections = metrics.RUNTIME.sessions = metrics.RUNTIME.store = None
        if http is not None:
            await asyncio.to_thread(http.stop)
        await broker.stop()
        await asyncio.to_thread(bridge.stop)
        bridge.close()
    log.info("stopped")


def serve(settings: Settings) -> None:
    """Run the embedded broker, the bridge and the HTTP side until SIGINT/SIGTERM."""
    with datadir.exclusive(settings.data_dir):
        asyncio.run(_serve(settings))


def run_bridge(settings: Settings, transport: TransportFactory, where: str) -> None:
    """Run only the bridge (and its HTTP side), against an external broker (`over_mqtt`) or RabbitMQ
    (`gateway.bridge.amqp`), until SIGINT/SIGTERM. The HTTP side answers from the start: /readyz says when the
    broker is reached. `where` names the broker in the logs."""

    async def main() -> None:
        stop = _stop_on_signals()
        _check_files(settings)
        bridge = Bridge(settings, transport)
        http = _http_side(settings, bridge, lambda: {"broker": bridge.connected, "bridge": bridge.running})
        try:
            if http is not None:
                await asyncio.to_thread(http.start)
            starting = asyncio.create_task(asyncio.to_thread(bridge.start, None))  # waits for the broker
            stopping = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if starting.done():
                    starting.result()
                    ctx = {"broker": where, **({"http": "{}:{}".format(*http.address)} if http else {}),
                           "db": bridge.store.where}
                    log.info("fieldgate bridge ready", extra={"ctx": ctx})
                    await stopping
                log.info("stopping")
                if http is not None:
                    await asyncio.to_thread(http.stop)
                await asyncio.to_thread(bridge.stop)
                await asyncio.gather(starting, return_exceptions=True)
            finally:
                stopping.cancel()
        finally:
            metrics.RUNTIME.store = None
            if http is not None:
                http.stop()
            bridge.close()
        log.info("stopped")

    if is_postgres(location_of(settings)):  # the database coordinates the bridges: they may share a data directory
        asyncio.run(main())
        return
    with datadir.exclusive(settings.data_dir):
        asyncio.run(main())


def partition_ownership(settings: Settings) -> Callable[[], Ownership]:
    """How a bridge on RabbitMQ picks its inbound partitions: bridges sharing a PostgreSQL store split them by its
    locks (`PartitionLocks`); one with its own SQLite file takes them all."""
    url = settings.storage.url
    if url is None:
        return EveryPartition
    from gateway.store.postgres import PartitionLocks

    return lambda: PartitionLocks(url, PARTITIONS)
