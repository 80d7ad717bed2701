"""Running fieldgate: the embedded broker and the bridge in one process, or the bridge alone.

Both hold the data directory's lock (`gateway.store.datadir`) for as long as they run, so a second
gateway on the same directory exits at once. `serve` prints one `fieldgate ready …` line to
stderr once clients can connect, and stops cleanly on SIGINT or SIGTERM: the bridge finishes its
batch and disconnects, then the broker shuts down.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from gateway.bridge.local import local_transport
from gateway.bridge.transport import BrokerUrl
from gateway.bridge.worker import Bridge, over_mqtt
from gateway.broker.embedded import EmbeddedBroker
from gateway.config import Settings
from gateway.core.contract import EMBEDDED_FILTERS, INBOUND_FILTERS
from gateway.store import datadir, sqlite
from gateway.store.tables import db_path

log = logging.getLogger("fieldgate")


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM; install it before announcing readiness."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _serve(settings: Settings) -> None:
    stop = _stop_on_signals()
    for name in ("fieldgate.db", "broker.db"):
        sqlite.ensure_usable(settings.data_dir / name)
    broker = EmbeddedBroker(settings)
    if settings.bridge.in_process:
        transport = local_transport(broker.engine, settings.bridge.client_id, INBOUND_FILTERS + EMBEDDED_FILTERS)
    else:
        transport = over_mqtt(settings, lambda: broker.bridge_url, embedded=True)
    bridge = Bridge(settings, transport)  # creates or migrates fieldgate.db, which the broker reads users from
    try:
        await broker.start()
        await asyncio.to_thread(bridge.start)
        bound = {name: "{}:{}".format(*broker.address(listener)) for name, listener in
                 (("mqtt", "default"), ("tls", "tls"), ("ws", "websocket")) if listener in broker.listener_names}
        log.info("fieldgate ready", extra={"ctx": {**bound, "anonymous": settings.allow_anonymous,
                                                   "db": db_path(settings.data_dir)}})
        await stop.wait()
        log.info("stopping")
        await asyncio.to_thread(bridge.stop)
    finally:
        bridge.close()
        await broker.stop()
    log.info("stopped")


def serve(settings: Settings) -> None:
    """Run the embedded broker and the bridge until SIGINT/SIGTERM."""
    with datadir.exclusive(settings.data_dir):
        asyncio.run(_serve(settings))


def run_bridge(settings: Settings, url: BrokerUrl) -> None:
    """Run only the bridge, against an external broker, until SIGINT/SIGTERM."""

    async def main() -> None:
        stop = _stop_on_signals()
        sqlite.ensure_usable(db_path(settings.data_dir))
        bridge = Bridge(settings, over_mqtt(settings, lambda: url))
        starting = asyncio.create_task(asyncio.to_thread(bridge.start, None))  # waits for the broker as long as needed
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if starting.done():
                starting.result()
                log.info("fieldgate bridge ready", extra={"ctx": {"broker": str(url),
                                                                  "db": db_path(settings.data_dir)}})
                await stopping
            log.info("stopping")
            await asyncio.to_thread(bridge.stop)
            await asyncio.gather(starting, return_exceptions=True)
        finally:
            stopping.cancel()
            bridge.close()
        log.info("stopped")

    with datadir.exclusive(settings.data_dir):
        asyncio.run(main())
