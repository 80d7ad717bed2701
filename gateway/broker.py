"""The embedded MQTT broker: amqtt, configured from Settings. The only module that imports amqtt.

Corrections of amqtt 0.12.1 behaviour live here and name what they replace:

- amqtt's `AnonymousAuthPlugin(allow_anonymous=True)` marks every session anonymous, and amqtt
  neither queues offline messages for anonymous sessions nor keeps them (`Broker._run_broadcast`,
  `Broker._session_monitor`). `OpenAuthPlugin` accepts the same clients without that mark, so a
  courier with clean_session=False gets the tasks published while it was away.
"""

from __future__ import annotations

import asyncio
import logging
from importlib.metadata import version
from typing import Any

from amqtt.broker import Broker
from amqtt.errors import BrokerError
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

from gateway.config import Settings
from gateway.errors import BrokerStartError

log = logging.getLogger("fieldgate.broker")

#: The amqtt release whose internals this module relies on; tests/test_broker.py checks it.
AMQTT_VERSION = "0.12.1"


class OpenAuthPlugin(BaseAuthPlugin):
    """Accept every client and leave `session.is_anonymous` False, so persistent sessions stay persistent."""

    async def authenticate(self, *, session: Session) -> bool:
        return True


def amqtt_config(settings: Settings) -> dict[str, Any]:
    """The amqtt config dict for our settings. Giving `plugins` replaces amqtt's default plugin set."""
    return {
        "listeners": {
            "default": {"type": "tcp", "bind": f"{settings.mqtt.host}:{settings.mqtt.port}"},
        },
        "timeout_disconnect_delay": 0,
        "plugins": {f"{OpenAuthPlugin.__module__}.{OpenAuthPlugin.__qualname__}": {}},
    }


class EmbeddedBroker:
    """amqtt's Broker, started and stopped inside the caller's running event loop."""

    def __init__(self, settings: Settings) -> None:
        if version("amqtt") != AMQTT_VERSION:
            raise BrokerStartError(
                f"fieldgate embeds amqtt {AMQTT_VERSION} but amqtt {version('amqtt')} is installed",
                hint=f"pip install amqtt=={AMQTT_VERSION}",
            )
        self.settings = settings
        self._broker: Broker | None = None

    async def start(self) -> tuple[str, int]:
        """Start listening; return the (host, port) actually bound (port 0 picks a free one)."""
        self._broker = Broker(amqtt_config(self.settings), loop=asyncio.get_running_loop())
        try:
            await self._broker.start()
        except BrokerError as exc:
            raise BrokerStartError(
                f"the embedded broker could not listen on {self.settings.mqtt.host}:{self.settings.mqtt.port}: "
                f"{exc.__cause__ or exc}"
            ) from exc
        server = self._broker._servers["default"].instance  # amqtt keeps no public accessor for the socket
        host, port = server.sockets[0].getsockname()[:2]
        return host, port

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
