"""fieldgate: an MQTT field-messaging gateway for local shops that deliver.

Public API — what the CLI and the tests use (imported on first use, so a command that needs the
store does not load the broker):

- `load_settings`, `Settings`            configuration (gateway.config; broker.yaml)
- `serve`, `run_bridge`                  run broker + bridge, or the bridge alone (gateway.server)
- `Bridge`, `BrokerUrl`                  the MQTT bridge (gateway.bridge.worker, gateway.bridge.transport)
- `EmbeddedBroker`                       amqtt, embedded (gateway.broker.embedded)
- `Gateway`                              inbound message → rows + outbound messages (gateway.bridge.service)
- `Store`                                the SQLite file's one writer (gateway.store.tables)
- `Queries`                              what its readers use: CLI, HTTP, pages (gateway.store.queries)
- `FieldgateError` and its subclasses    the error tree (gateway.errors)

Pure parts, testable without a broker: `gateway.core` — the topic contract, the order lifecycle,
assignment, ETA, the ACL and the payload models.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Bridge": "gateway.bridge.worker",
    "BrokerUrl": "gateway.bridge.transport",
    "EmbeddedBroker": "gateway.broker.embedded",
    "FieldgateError": "gateway.errors",
    "Gateway": "gateway.bridge.service",
    "Queries": "gateway.store.queries",
    "Settings": "gateway.config",
    "Store": "gateway.store.tables",
    "load_settings": "gateway.config",
    "run_bridge": "gateway.server",
    "serve": "gateway.server",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gateway' has no attribute {name!r}")
