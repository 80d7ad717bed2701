"""The topic contract, declared once: every topic with its pattern, direction, payload, who may publish
and read it, and where errors about it go.

Pure data and pure functions. Everything else is derived from `TOPICS`: routing of inbound topics
(`parse_inbound`), what the bridge subscribes to (`INBOUND_FILTERS`), the role ACL
(`gateway.core.acl`), the hint for a topic outside the contract, and the README's topic table
(tests/test_docs.py checks it). The `*_topic` functions are the only place outbound names are spelled.

Placeholders: `{courier_id}`, `{shop_id}`, `{order_id}`, `{device}` are ids (1-64 letters, digits,
`_ . : -`). In the ACL, a role's own placeholder (`{courier_id}` for a courier, `{shop_id}` for a
shop) becomes its user id; any other becomes `+`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from gateway.errors import UnknownTopic

_ID = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"
_ID_RE = re.compile(_ID)
#: A whole id, as a regular expression (the HTTP side's path and query parameters).
ID_PATTERN = f"^{_ID}$"


class Role(StrEnum):
    """Who a connection is (see `gateway.core.acl`)."""

    courier = "courier"
    shop = "shop"
    ordersys = "ordersys"
    operator = "operator"
    local = "local"  # anonymous, on loopback: every topic
    gateway = "gateway"  # the embedded bridge: every topic


class Kind(StrEnum):
    """What an inbound message is, decided by its topic alone."""

    order = "order"
    command = "command"
    open_orders = "open_orders"
    courier_orders = "courier_orders"
    order_state = "order_state"
    receipt = "receipt"
    status = "status"
    gps = "gps"
    presence = "presence"
    owntracks = "owntracks"
    device = "device"
    broker = "broker"
    chat = "chat"
    chat_read = "chat_read"
    chat_history = "chat_history"
    media = "media"
    rating = "rating"


@dataclass(frozen=True)
class Topic:
    """One topic of the contract."""

    pattern: str
    inbound: bool  # True: clients publish it and the gateway reads it; False: the gateway publishes it
    payload: str  # its models' schema stems in schemas/ ("order" → order.json; "a, b" for two), "" for none
    summary: str
    publish: tuple[Role, ...] = ()  # roles that may publish it (beyond local and gateway, which may do anything)
    read: tuple[Role, ...] = ()  # roles that may subscribe to it (operator may read everything anyway)
    kind: Kind | None = None  # the handler of an inbound topic (None: allowed but not read by the gateway)
    errors: str = ""  # the errors topic of an inbound topic's sender
    retained: bool = False
    internal: bool = False  # published by the embedded broker itself; no client may publish a `$` topic

    @property
    def schemas(self) -> tuple[str, ...]:
        """The schema stems of what this topic carries."""
        return tuple(s for s in self.payload.split(", ") if s)

    @property
    def filter(self) -> str:
        """The MQTT subscription filter matching every instance of the pattern."""
        return re.sub(r"\{[a-z_]+\}", "+", self.pattern)

    def regex(self) -> re.Pattern[str]:
        return re.compile(re.sub(r"\\\{([a-z_]+)\\\}", rf"(?P<\1>{_ID})", re.escape(self.pattern)))


ORDERS_IN = "orders/in"
ORDERSYS_ACKS = "ordersys/acks"
ORDERSYS_ERRORS = "ordersys/errors"
OPERATOR_COMMANDS = "operator/commands"
OPERATOR_ERRORS = "operator/errors"
ORDERSYS_NOTICES = "ordersys/notices"
BROKER_EVENTS = "$fieldgate/broker"

_C, _S, _O, _P = Role.courier, Role.shop, Role.ordersys, Role.operator
_COURIER_ERRORS = "couriers/{courier_id}/errors"
_SHOP_ERRORS = "shops/{shop_id}/errors"

TOPICS: tuple[Topic, ...] = (
    # ------------------------------------------------------------ inbound
    Topic(ORDERS_IN, True, "order", "an order: create, or update of the same `order_id`",
          publish=(_O,), kind=Kind.order, errors=ORDERSYS_ERRORS),
    Topic("shops/{shop_id}/commands", True, "shop-command", "assign, packed, cancel",
          publish=(_S,), kind=Kind.command, errors=_SHOP_ERRORS),
    Topic("shops/{shop_id}/open/get", True, "open-orders-request", "ask for the shop's open orders",
          publish=(_S,), kind=Kind.open_orders, errors=_SHOP_ERRORS),
    Topic("shops/{shop_id}/state/get", True, "order-state-request", "ask for one of the shop's orders' state "
          "(answered on orders/{order_id}/state, not retained)", publish=(_S,), kind=Kind.order_state,
          errors=_SHOP_ERRORS),
    Topic(OPERATOR_COMMANDS, True, "shop-command", "an operator's command on any shop's order "
          "(`fieldgate orders assign|packed|cancel` uses the same path)",
          publish=(_P,), kind=Kind.command, errors=OPERATOR_ERRORS),
    Topic("couriers/{courier_id}/receipts", True, "receipt", "the phone got (and showed) these tasks",
          publish=(_C,), kind=Kind.receipt, errors=_COURIER_ERRORS),
    Topic("couriers/{courier_id}/status", True, "status-update", "the courier moved an order along",
          publish=(_C,), kind=Kind.status, errors=_COURIER_ERRORS),
    Topic("couriers/{courier_id}/gps", True, "location", "a GPS fix, OwnTracks' format",
          publish=(_C,), kind=Kind.gps, errors=_COURIER_ERRORS),
    Topic("couriers/{courier_id}/orders/get", True, "courier-orders-request", "ask for the courier's active orders "
          "(where no broker keeps them retained: RabbitMQ)", publish=(_C,), kind=Kind.courier_orders,
          errors=_COURIER_ERRORS),
    Topic("couriers/{courier_id}/presence", True, "presence", "online at connect, its will says offline",
          publish=(_C,), kind=Kind.presence, errors=_COURIER_ERRORS, retained=True),
    Topic("owntracks/{courier_id}/{device}", True, "location", "the OwnTracks app's own topic",
          publish=(_C,), kind=Kind.owntracks, errors=_COURIER_ERRORS),
    Topic("owntracks/{courier_id}/{device}/{leaf}", True, "", "OwnTracks' other messages (events, cards, "
          "waypoints): allowed, not used", publish=(_C,)),
    Topic("shops/{shop_id}/chat/in", True, "chat-in", "a message in one of the shop's orders' conversations",
          publish=(_S,), kind=Kind.chat, errors=_SHOP_ERRORS),
    Topic("couriers/{courier_id}/chat/in", True, "chat-in", "a message in the conversation of one of its orders",
          publish=(_C,), kind=Kind.chat, errors=_COURIER_ERRORS),
    Topic("ordersys/chat/in", True, "chat-in", "a customer's message, relayed by the order system",
          publish=(_O,), kind=Kind.chat, errors=ORDERSYS_ERRORS),
    Topic("shops/{shop_id}/chat/read", True, "chat-read-in", "the shop read a conversation up to a seq",
          publish=(_S,), kind=Kind.chat_read, errors=_SHOP_ERRORS),
    Topic("couriers/{courier_id}/chat/read", True, "chat-read-in", "the courier read a conversation up to a seq",
          publish=(_C,), kind=Kind.chat_read, errors=_COURIER_ERRORS),
    Topic("ordersys/chat/read", True, "chat-read-in", "the customer read a conversation up to a seq",
          publish=(_O,), kind=Kind.chat_read, errors=ORDERSYS_ERRORS),
    Topic("shops/{shop_id}/chat/history/get", True, "chat-history-request", "ask for a conversation so far",
          publish=(_S,), kind=Kind.chat_history, errors=_SHOP_ERRORS),
    Topic("couriers/{courier_id}/chat/history/get", True, "chat-history-request", "ask for a conversation so far",
          publish=(_C,), kind=Kind.chat_history, errors=_COURIER_ERRORS),
    Topic("ordersys/chat/history/get", True, "chat-history-request", "ask for a conversation so far",
          publish=(_O,), kind=Kind.chat_history, errors=ORDERSYS_ERRORS),
    Topic("couriers/{courier_id}/media/{order_id}/{media_kind}", True, "", "a photo or voice note: the file's raw "
          "bytes (JPEG, PNG, WebP, OGG/Opus, M4A)", publish=(_C,), kind=Kind.media, errors=_COURIER_ERRORS),
    Topic("shops/{shop_id}/media/{order_id}/{media_kind}", True, "", "a photo or voice note: the file's raw bytes",
          publish=(_S,), kind=Kind.media, errors=_SHOP_ERRORS),
    Topic("ordersys/ratings/in", True, "rating", "a customer's rating of a delivered order",
          publish=(_O,), kind=Kind.rating, errors=ORDERSYS_ERRORS),
    Topic("$fieldgate/devices/{courier_id}", True, "", "a courier's connection came or went (embedded broker)",
          kind=Kind.device, internal=True),
    Topic(BROKER_EVENTS, True, "", "the embedded broker started (every connection of before is gone)",
          kind=Kind.broker, internal=True),
    # ------------------------------------------------------------ outbound
    Topic(ORDERSYS_ACKS, False, "ack", "what happened to an order, at every step", read=(_O,)),
    Topic(ORDERSYS_ERRORS, False, "rejection", "why an order system's message was refused", read=(_O,)),
    Topic("shops/{shop_id}/orders", False, "order-event", "something happened to one of the shop's orders",
          read=(_S,)),
    Topic("shops/{shop_id}/open", False, "open-orders", "the shop's open orders, answering open/get",
          read=(_S,)),
    Topic(_SHOP_ERRORS, False, "rejection", "why a shop's message was refused", read=(_S,)),
    Topic("couriers/{courier_id}/tasks", False, "task", "work for the courier, each with a `msg_id`",
          read=(_C,)),
    Topic(_COURIER_ERRORS, False, "rejection", "why a courier's message was refused", read=(_C,)),
    Topic("couriers/{courier_id}/orders", False, "courier-orders", "the courier's active orders, at every change "
          "and answering orders/get", read=(_C,), retained=True),
    Topic("couriers/{courier_id}/sync", False, "sync", "tasks one of the courier's devices marked read",
          read=(_C,)),
    Topic("couriers/{courier_id}/location", False, "courier-location", "the courier's newest fix",
          retained=True),
    Topic("orders/{order_id}/state", False, "order-state", "where an order is, at every change and answering a "
          "shop's state/get (a shop reads only its own)",
          read=(_S,), retained=True),
    Topic(OPERATOR_ERRORS, False, "rejection", "why an operator's command was refused", read=(_P,)),
    Topic(ORDERSYS_NOTICES, False, "notice", "a message for a customer, to send by SMS or app push", read=(_O,)),
    Topic("customers/{order_id}/notices", False, "notice", "the same, per order, for a customer app", read=(_O,)),
    Topic("shops/{shop_id}/chat", False, "chat-message, chat-read",
          "its orders' conversations (and read receipts)", read=(_S,)),
    Topic("couriers/{courier_id}/chat", False, "chat-message, chat-read",
          "its orders' conversations (and read receipts)", read=(_C,)),
    Topic("ordersys/chat", False, "chat-message, chat-read",
          "every conversation, for the customers (and read receipts)", read=(_O,)),
    Topic("customers/{order_id}/chat", False, "chat-message, chat-read",
          "one order's conversation, for a customer app", read=(_O,)),
    Topic("shops/{shop_id}/chat/history", False, "chat-history", "a conversation so far, as asked", read=(_S,)),
    Topic("couriers/{courier_id}/chat/history", False, "chat-history", "a conversation so far: as asked, and when "
          "the courier is assigned to an order with one", read=(_C,)),
    Topic("ordersys/chat/history", False, "chat-history", "a conversation so far, as asked", read=(_O,)),
    Topic("couriers/{courier_id}/media/ack", False, "media-ack", "its upload is stored", read=(_C,)),
    Topic("shops/{shop_id}/media/ack", False, "media-ack", "its upload is stored", read=(_S,)),
    Topic("clients/{client_id}/errors", False, "rejection", "why an anonymous client's publish went nowhere "
          "(a topic outside the contract)"),
)

_ROUTES: tuple[tuple[re.Pattern[str], Topic], ...] = tuple((t.regex(), t) for t in TOPICS if t.kind is not None)
_ROUTES_BY_FIRST: dict[str, tuple[tuple[re.Pattern[str], Topic], ...]] = {
    first: tuple(r for r in _ROUTES if r[1].pattern.partition("/")[0] == first)
    for first in {t.pattern.partition("/")[0] for _, t in _ROUTES}
}
_ANY = tuple(re.compile(re.sub(r"\\\{([a-z_]+)\\\}", "[^/]+", re.escape(t.pattern))) for t in TOPICS)

#: What the bridge subscribes to (QoS 1) on any broker. Everything it reads, nothing it writes.
INBOUND_FILTERS: tuple[str, ...] = tuple(t.filter for t in TOPICS if t.kind is not None and not t.internal)
#: What the bridge subscribes to in addition on the embedded broker: its connection events.
EMBEDDED_FILTERS: tuple[str, ...] = ("$fieldgate/#",)


@dataclass(frozen=True)
class Route:
    """An inbound topic, understood: its kind, whose it is, and where errors go back."""

    kind: Kind
    topic: str
    shop_id: str | None = None
    courier_id: str | None = None
    device: str | None = None
    order_id: str | None = None
    media_kind: str | None = None
    errors_topic: str = ORDERSYS_ERRORS


@lru_cache(maxsize=4096)  # a courier's phone publishes on the same few topics all day
def parse_inbound(topic: str) -> Route:
    """Route an inbound topic, or raise UnknownTopic naming the topics that exist."""
    for pattern, declared in _ROUTES_BY_FIRST.get(topic.partition("/")[0], ()):
        match = pattern.fullmatch(topic)
        if match:
            ids = match.groupdict()
            assert declared.kind is not None
            return Route(kind=declared.kind, topic=topic, errors_topic=declared.errors.format(**ids), **ids)
    raise UnknownTopic(f"topic {topic!r} is not part of the fieldgate topic contract", hint=INBOUND_HINT)


INBOUND_HINT = "Publish to " + ", ".join(t.pattern for t in TOPICS if t.kind is not None and not t.internal) + "."


@lru_cache(maxsize=4096)
def in_contract(topic: str) -> bool:
    """Does `topic` name a topic of the contract (in either direction)?"""
    return any(p.fullmatch(topic) for p in _ANY)


def courier_topic(courier_id: str, leaf: str) -> str:
    """couriers/{courier_id}/{leaf}: tasks, errors, location, ..."""
    return f"couriers/{courier_id}/{leaf}"


def shop_topic(shop_id: str, leaf: str) -> str:
    """shops/{shop_id}/{leaf}: orders, open, errors, ..."""
    return f"shops/{shop_id}/{leaf}"


def order_state_topic(order_id: str) -> str:
    """orders/{order_id}/state, retained."""
    return f"orders/{order_id}/state"


def customer_topic(order_id: str, leaf: str) -> str:
    """customers/{order_id}/{leaf}: notices, chat."""
    return f"customers/{order_id}/{leaf}"


def device_topic(courier_id: str) -> str:
    """$fieldgate/devices/{courier_id}: the embedded broker's word that a courier's connection came or went."""
    return f"$fieldgate/devices/{courier_id}"


def is_id(text: str) -> bool:
    """Could `text` stand in a topic as an id?"""
    return _ID_RE.fullmatch(text) is not None


def errors_topic_named_by(topic: str) -> str | None:
    """The errors topic of whoever a topic outside the contract seems to belong to, by its first levels:
    couriers/X/… and owntracks/X/… → couriers/X/errors, shops/X/… → shops/X/errors, orders/… and ordersys/…
    → ordersys/errors; None if it names nobody."""
    first, _, rest = topic.partition("/")
    owner = rest.partition("/")[0]
    if first in ("couriers", "owntracks") and is_id(owner):
        return courier_topic(owner, "errors")
    if first == "shops" and is_id(owner):
        return shop_topic(owner, "errors")
    if first in ("orders", "ordersys"):
        return ORDERSYS_ERRORS
    return None


_MEDIA_UPLOAD = re.compile(rf"(couriers|shops)/{_ID}/media/{_ID}/{_ID}")


def is_media_upload(topic: str) -> bool:
    """Is this a media upload topic (the only ones whose packets may exceed broker.max_packet_bytes)?"""
    return _MEDIA_UPLOAD.fullmatch(topic) is not None


def client_errors_topic(client_id: str) -> str:
    """clients/{client_id}/errors: for an anonymous sender known only by its client id."""
    return f"clients/{client_id}/errors"
