"""Who may do what: identities and the topic ACL, derived from the topic contract. Pure functions, no broker.

The identity comes from the credentials, never from the topic a client picks (as Mosquitto's
`pattern … %u`): a courier user `c7` may write `couriers/c7/status` and nothing of `c8`.
Each role may publish the inbound topics and read the outbound topics `gateway.core.contract.TOPICS`
grants it, its own id standing for its placeholder; on top of that:

    ordersys   may also read ordersys/#
    operator   may read everything, $SYS included
    local      everything but $SYS and $fieldgate   (anonymous on loopback)
    gateway    everything   (the embedded bridge)

and a shop subscribed to orders/+/state receives only its own orders' states (`may_receive`).
`%i` is the user's id (`fieldgate users add NAME --id ID`, default NAME).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from gateway.core.contract import TOPICS, Role

__all__ = ["USER_ROLES", "Identity", "Role", "may_publish", "may_receive", "may_subscribe", "needs_receive_check"]

#: Roles an operator can give a user (`local` and `gateway` are the broker's own).
USER_ROLES = (Role.courier, Role.shop, Role.ordersys, Role.operator)
_OWN = {Role.courier: "{courier_id}", Role.shop: "{shop_id}"}
_EXTRA_READ = {Role.ordersys: ("ordersys/#",), Role.operator: ("#", "$SYS/#")}
_UNRESTRICTED = frozenset({Role.local, Role.gateway})
#: Topics only the broker itself publishes (anonymous local clients may publish other `$` topics).
_BROKER_OWN = ("$SYS", "$fieldgate")


def _grant(pattern: str, role: Role) -> str:
    own = _OWN.get(role)
    if own is not None:
        pattern = pattern.replace(own, "%i")
    return re.sub(r"\{[a-z_]+\}", "+", pattern)


_PUBLISH: dict[Role, tuple[str, ...]] = {
    role: tuple(_grant(t.pattern, role) for t in TOPICS if t.inbound and role in t.publish) for role in USER_ROLES
}
_SUBSCRIBE: dict[Role, tuple[str, ...]] = {
    role: tuple(_grant(t.pattern, role) for t in TOPICS if not t.inbound and role in t.read)
    + _EXTRA_READ.get(role, ())
    for role in USER_ROLES
}


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


def patterns(identity: Identity, *, publish: bool) -> tuple[str, ...]:
    """The topic filters this identity may publish to (or read), its id filled in."""
    table = _PUBLISH if publish else _SUBSCRIBE
    if identity.id is None or any(c in identity.id for c in "+#/"):
        return tuple(p for p in table[identity.role] if "%i" not in p)
    return tuple(p.replace("%i", identity.id) for p in table[identity.role])


def may_publish(identity: Identity, topic: str) -> bool:
    if identity.role in _UNRESTRICTED:
        return identity.role == Role.gateway or not topic.startswith(_BROKER_OWN)
    return any(covers(p, topic) for p in patterns(identity, publish=True))


def may_subscribe(identity: Identity, topic_filter: str) -> bool:
    if identity.role in _UNRESTRICTED:
        return True
    return any(covers(p, topic_filter) for p in patterns(identity, publish=False))


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
