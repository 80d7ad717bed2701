"""fieldgate: an MQTT field-messaging gateway for local shops that deliver.

Public API — what the CLI and the tests use:

- `load_settings`, `Settings`            configuration (gateway.config; broker.yaml)
- `serve`, `run_bridge`                  run broker + bridge, or the bridge alone (gateway.server)
- `Bridge`, `BrokerUrl`                  the MQTT bridge (gateway.bridge, gateway.transport)
- `EmbeddedBroker`                       amqtt, embedded (gateway.broker)
- `Gateway`                              inbound message → rows + outbound messages (gateway.service)
- `Store`                                the SQLite file (gateway.store)
- `FieldgateError` and its subclasses    the error tree (gateway.errors)

Pure parts, testable without a broker: `gateway.contract` (topics), `gateway.lifecycle`
(the order state machine), `gateway.models` (payloads).
"""

from gateway.bridge import Bridge
from gateway.broker import EmbeddedBroker
from gateway.config import Settings, load_settings
from gateway.errors import FieldgateError
from gateway.server import run_bridge, serve
from gateway.service import Gateway
from gateway.store import Store
from gateway.transport import BrokerUrl

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
