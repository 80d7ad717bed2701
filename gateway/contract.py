"""The topic contract: which topics exist, who publishes them, and how names are built.

Pure functions only. `parse_inbound` is where an inbound topic is routed to a handler kind;
the `*_topic` functions are the only place outbound topic names are spelled.
See README "Topic contract" and docs/topics.md for the rationale.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from gateway.errors import UnknownTopic

ORDERS_IN = "orders/in"
ORDERSYS_ACKS = "ordersys/acks"
ORDERSYS_ERRORS = "ordersys/errors"

_ID = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"


class Kind(StrEnum):
    """What an inbound message is, decided by its topic alone."""

    order = "order"
    command = "command"
    receipt = "receipt"
    status = "status"
    gps = "gps"
    presence = "presence"
    owntracks = "owntracks"


@dataclass(frozen=True)
class Route:
    """An inbound topic, understood: its kind, whose it is, and where errors go back."""

    kind: Kind
    topic: str
    shop_id: str | None = None
    courier_id: str | None = None
    device: str | None = None

    @property
    def errors_topic(self) -> str:
        if self.courier_id is not None:
            return courier_topic(self.courier_id, "errors")
        if self.shop_id is not None:
            return shop_topic(self.shop_id, "errors")
        return ORDERSYS_ERRORS


_INBOUND: list[tuple[re.Pattern[str], Kind]] = [
    (re.compile(r"orders/in"), Kind.order),
    (re.compile(rf"shops/(?P<shop_id>{_ID})/commands"), Kind.command),
    (re.compile(rf"couriers/(?P<courier_id>{_ID})/receipts"), Kind.receipt),
    (re.compile(rf"couriers/(?P<courier_id>{_ID})/status"), Kind.status),
    (re.compile(rf"couriers/(?P<courier_id>{_ID})/gps"), Kind.gps),
    (re.compile(rf"couriers/(?P<courier_id>{_ID})/presence"), Kind.presence),
    (re.compile(rf"owntracks/(?P<courier_id>{_ID})/(?P<device>{_ID})"), Kind.owntracks),
]

#: What the bridge subscribes to (QoS 1). Everything it reads, nothing it writes.
INBOUND_FILTERS: tuple[str, ...] = (
    ORDERS_IN,
    "shops/+/commands",
    "couriers/+/receipts",
    "couriers/+/status",
    "couriers/+/gps",
    "couriers/+/presence",
    "owntracks/+/+",
)


def parse_inbound(topic: str) -> Route:
    """Route an inbound topic, or raise UnknownTopic naming the topics that exist."""
    for pattern, kind in _INBOUND:
        match = pattern.fullmatch(topic)
        if match:
            return Route(kind=kind, topic=topic, **match.groupdict())
    raise UnknownTopic(
        f"topic {topic!r} is not part of the fieldgate topic contract",
        hint="Publish to orders/in, shops/<shop>/commands, couriers/<courier>/status|receipts|gps|presence "
        "or owntracks/<courier>/<device>.",
    )


def courier_topic(courier_id: str, leaf: str) -> str:
    """couriers/{courier_id}/{leaf}: tasks, errors, location, ..."""
    return f"couriers/{courier_id}/{leaf}"


def shop_topic(shop_id: str, leaf: str) -> str:
    """shops/{shop_id}/{leaf}: orders, errors, ..."""
    return f"shops/{shop_id}/{leaf}"


def order_state_topic(order_id: str) -> str:
    """orders/{order_id}/state, retained."""
    return f"orders/{order_id}/state"
