"""fieldgate: an MQTT field-messaging gateway for local shops that deliver.

Public API — what the CLI and the tests use:

- `load_settings`, `Settings`            configuration (gateway.config; broker.yaml)
- `serve`, `run_bridge`                  run broker + bridge, or the bridge alone (gateway.server)
- `Bridge`, `BrokerUrl`                  the MQTT bridge (gateway.bridge.worker, gateway.bridge.transport)
- `EmbeddedBroker`                       amqtt, embedded (gateway.broker.embedded)
- `Gateway`                              inbound message → rows + outbound messages (gateway.bridge.service)
- `Store`                                the SQLite file (gateway.store.tables)
- `FieldgateError` and its subclasses    the error tree (gateway.errors)

Pure parts, testable without a broker: `gateway.core.contract` (topics), `gateway.core.lifecycle`
(the order state machine), `gateway.core.models` (payloads).
"""

from gateway.bridge.service import Gateway
from gateway.bridge.transport import BrokerUrl
from gateway.bridge.worker import Bridge
from gateway.broker.embedded import EmbeddedBroker
from gateway.config import Settings, load_settings
from gateway.errors import FieldgateError
from gateway.server import run_bridge, serve
from gateway.store.tables import Store

__all__ = [
    "Bridge",
    "BrokerUrl",
    "EmbeddedBroker",
    "FieldgateError",
    "Gateway",
    "Settings",
    "Store",
    "load_settings",
    "run_bridge",
    "serve",
]
