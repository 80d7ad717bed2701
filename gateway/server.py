"""Running fieldgate: the embedded broker and the bridge in one process, or the bridge alone.

`serve` prints one `fieldgate ready …` line to stderr once clients can connect, and stops
cleanly on SIGINT or SIGTERM: the bridge finishes its batch and disconnects, then the broker
shuts down.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from gateway import dbfiles
from gateway.bridge import Bridge, over_mqtt
from gateway.broker import EmbeddedBroker
from gateway.config import Settings
from gateway.store import db_path
from gateway.transport import BrokerUrl

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
        dbfiles.ensure_usable(settings.data_dir / name)
    broker = EmbeddedBroker(settings)
    await broker.start()
    transport = broker.local_transport() if settings.bridge.in_process else over_mqtt(settings, broker.bridge_url)
    bridge = Bridge(settings, transport)
    try:
        await asyncio.to_thread(bridge.start)
        bound = {name: "{}:{}".format(*broker.address(listener)) for name, listener in
                 (("mqtt", "default"), ("tls", "tls"), ("ws", "websocket")) if listener in broker.listener_names}
        log.info("fieldgate ready", extra={"ctx": {**bound, "anonymous": settings.allow_anonymous,
                                                   "db": db_path(settings.data_dir)}})
        await stop.wait()
        log.info("stopping")
        await asyncio.to_thread(bridge.stop)
    finally:
        await broker.stop()
    log.info("stopped")


def serve(settings: Settings) -> None:
    """Run the embedded broker and the bridge until SIGINT/SIGTERM."""
    asyncio.run(_serve(settings))


def run_bridge(settings: Settings, url: BrokerUrl) -> None:
    """Run only the bridge, against an external broker, until SIGINT/SIGTERM."""

    async def main() -> None:
        stop = _stop_on_signals()
        dbfiles.ensure_usable(db_path(settings.data_dir))
        bridge = Bridge(settings, over_mqtt(settings, url))
        await asyncio.to_thread(bridge.start)
        log.info("fieldgate bridge ready", extra={"ctx": {"broker": str(url), "db": db_path(settings.data_dir)}})
        await stop.wait()
        log.info("stopping")
        await asyncio.to_thread(bridge.stop)
        log.info("stopped")

    asyncio.run(main())
