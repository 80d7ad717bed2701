"""Who may do what: roles, identities and the topic ACL. Pure functions, no broker.

The identity comes from the credentials, never from the topic a client picks (as Mosquitto's
`pattern … %u`): a courier user `c7` may write `couriers/c7/status` and nothing of `c8`.

    role       publish                                         subscribe (read)
    courier    couriers/%i/status|receipts|gps|presence,       couriers/%i/tasks, couriers/%i/errors
               owntracks/%i/#
    shop       shops/%i/commands                               shops/%i/orders, shops/%i/errors,
                                                               orders/+/state (only its own orders')
    ordersys   orders/in                                       ordersys/#
    operator   -                                               everything, $SYS included
    local      everything                                      everything   (anonymous on loopback)
    gateway    everything                                      everything   (the embedded bridge)

`%i` is the user's id (`fieldgate users add NAME --id ID`, default NAME).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    courier = "courier"
    shop = "shop"
    ordersys = "ordersys"
    operator = "operator"
    local = "local"
    gateway = "gateway"


#: Roles an operator can give a user (`local` and `gateway` are the broker's own).
USER_ROLES = (Role.courier, Role.shop, Role.ordersys, Role.operator)

_PUBLISH = {
    Role.courier: ("couriers/%i/status", "couriers/%i/receipts", "couriers/%i/gps", "couriers/%i/presence",
                   "owntracks/%i/#"),
    Role.shop: ("shops/%i/commands",),
    Role.ordersys: ("orders/in",),
    Role.operator: (),
}
_SUBSCRIBE = {
    Role.courier: ("couriers/%i/tasks", "couriers/%i/errors"),
    Role.shop: ("shops/%i/orders", "shops/%i/errors", "orders/+/state"),
    Role.ordersys: ("ordersys/#",),
    Role.operator: ("#", "$SYS/#"),
}
_UNRESTRICTED = frozenset({Role.local, Role.gateway})


@dataclass(frozen=True)
class Identity:
    """Who a connection is: its role and, for couriers and shops, their id."""

    role: Role
    id: str | None = None
    username: str | None = None

    def __str__(self) -> str:
        return f"{self.role}:{self.id or self.username or '-'}"


def covers(pattern: str, topic_filter: str) -> bool:
    """Does every topic `topic_filter` can match also match `pattern`? (A topic name is a filter too.)"""
    p, f = pattern.split("/"), topic_filter.split("/")
    for i, level in enumerate(p):
        if level == "#":
            return not (i == 0 and f[0].startswith("$")) or p[0].startswith("$")
        if i >= len(f):
            return False
        if level == "+":
            if f[i] == "#" or (i == 0 and f[0].startswith("$")):
                return False
        elif level != f[i]:
            return False
    return len(p) == len(f)


def _patterns(identity: Identity, table: dict[Role, tuple[str, ...]]) -> tuple[str, ...]:
    if identity.id is None or any(c in identity.id for c in "+#/"):
        return tuple(p for p in table[identity.role] if "%i" not in p)
    return tuple(p.replace("%i", identity.id) for p in table[identity.role])


def may_publish(identity: Identity, topic: str) -> bool:
    if identity.role in _UNRESTRICTED:
        return True
    return any(covers(p, topic) for p in _patterns(identity, _PUBLISH))


def may_subscribe(identity: Identity, topic_filter: str) -> bool:
    if identity.role in _UNRESTRICTED:
        return True
    return any(covers(p, topic_filter) for p in _patterns(identity, _SUBSCRIBE))


def needs_receive_check(identity: Identity) -> bool:
    """Shops may subscribe to orders/+/state but receive only their own orders' states."""
    return identity.role == Role.shop


def may_receive(identity: Identity, topic: str, payload: bytes) -> bool:
    """Per-message check on top of the subscription: a shop sees only OrderStates with its shop_id."""
    if identity.role != Role.shop or not (topic.startswith("orders/") and topic.endswith("/state")):
        return True
    try:
        return json.loads(payload).get("shop_id") == identity.id
    except (ValueError, AttributeError):
        return False
