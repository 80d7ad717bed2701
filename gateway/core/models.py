"""The payloads of the topic contract, as pydantic models.

These models are the source of truth: `schemas/*.json` is generated from them
(`fieldgate schemas export`) and tests/test_schemas.py fails when the two drift.
Inbound models (what clients send) forbid unknown fields where a typo would silently
lose information (orders, commands, status updates); OwnTracks locations ignore extra
fields because the app sends many we do not use.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

Id = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"),
    Field(description="1-64 letters, digits, '_', '.', ':' or '-'; used inside topic names, so no '/', '+', '#'."),
]
Latitude = Annotated[float, Field(ge=-90, le=90, description="degrees")]
Longitude = Annotated[float, Field(ge=-180, le=180, description="degrees")]
Text = Annotated[str, StringConstraints(max_length=2000)]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Status(StrEnum):
    """Where an order is in its life. delivered, failed and cancelled are final."""

    created = "created"
    assigned = "assigned"
    packed = "packed"
    picked_up = "picked_up"
    en_route = "en_route"
    arriving = "arriving"
    delivered = "delivered"
    failed = "failed"
    cancelled = "cancelled"
    exception = "exception"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Out(BaseModel):
    """Outbound payloads: the gateway builds them, so they only need to serialise well."""

    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- orders/in


class Recipient(_Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    phone: Annotated[str, StringConstraints(pattern=r"^\+?[0-9][0-9 ()-]{2,31}$")] = Field(
        description="E.164 or local digits; spaces, dashes and parentheses allowed."
    )


class Address(_Strict):
    text: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    lat: Latitude | None = None
    lon: Longitude | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> Address:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon, or neither")
        return self


class Item(_Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    qty: int = Field(default=1, ge=1, le=10_000)
    sku: Annotated[str, StringConstraints(max_length=64)] | None = None


class Window(_Strict):
    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.end <= self.start:
            raise ValueError("window end must be after its start")
        return self


class Order(_Strict):
    """What the order system publishes on `orders/in`: a new order, or an update of the same order_id."""

    order_id: Id
    shop_id: Id
    courier_id: Id | None = Field(default=None, description="fixed assignment; a shop may assign later")
    recipient: Recipient
    address: Address
    items: list[Item] = Field(min_length=1, max_length=200)
    window: Window | None = None
    notes: Text = ""
    priority: Literal["low", "normal", "high", "urgent"] = "normal"


class OrderView(Order):
    """An order as the gateway knows it now: the order plus its status and courier."""

    status: Status
    courier_name: str | None = Field(default=None, description="the assigned courier's name, if registered")
    created_at: AwareDatetime
    updated_at: AwareDatetime


ReasonCode = Literal["vehicle_breakdown", "recipient_absent", "stock_out", "address_wrong", "damaged", "other"]


# ---------------------------------------------------------------- order system


class Ack(_Out):
    """On `ordersys/acks`: what happened to an order, so the order system can stop worrying."""

    kind: Literal[
        "accepted", "rejected", "assigned", "unassigned", "delivered_to_courier", "read_by_courier", "status_changed",
        "delayed", "change_confirmed", "rated",
    ]
    order_id: str | None
    status: Status | None = None
    courier_id: str | None = None
    msg_id: str | None = Field(default=None, description="the task's msg_id for delivered/read acks")
    reason: str | None = None
    duplicate: bool = Field(default=False, description="accepted: this exact order was accepted before (a retry)")
    courier_known: bool | None = Field(
        default=None, description="accepted/assigned: false if no courier with this id ever connected, has a user "
        "or is registered (the order is kept; the courier may log in later)")
    auto: bool = Field(default=False, description="assigned: the gateway chose the courier (nearest_idle)")
    reason_code: ReasonCode | None = Field(default=None, description="status_changed to exception: what went wrong")
    eta_at: AwareDatetime | None = Field(default=None, description="delayed: the new estimated arrival")
    media_id: str | None = Field(default=None, description="status_changed to delivered: the proof-of-delivery photo")
    tracking_url: str | None = Field(default=None, description="accepted: the customer's tracking page "
                                     "(web.public_url + /t/{token}); the same link every time")
    at: AwareDatetime = Field(default_factory=utcnow)


class FieldProblem(_Out):
    loc: str = Field(description="dotted path of the offending field, empty for the whole payload")
    msg: str


class Rejection(_Out):
    """On an errors topic: why the gateway refused a message, for the client that sent it."""

    reason: str
    topic: str
    hint: str = ""
    order_id: str | None = None
    msg_id: str | None = None
    errors: list[FieldProblem] = []
    at: AwareDatetime = Field(default_factory=utcnow)


# ---------------------------------------------------------------- shops


class OrderEvent(_Out):
    """On `shops/{shop_id}/orders`: something happened to one of the shop's orders."""

    kind: Literal[
        "created", "updated", "assigned", "unassigned", "status", "exception", "delivered_to_courier",
        "read_by_courier", "courier_offline", "courier_online", "waiting_for_courier", "alert", "rejected_by_courier",
        "late_risk", "change_pending", "change_confirmed", "media", "rated",
    ]
    order_id: str
    status: Status
    courier_id: str | None = None
    courier_name: str | None = None
    courier_phone: str | None = Field(default=None, description="assigned: the courier's phone, for its own shop "
                                      "only (never on any other topic)")
    reason: str | None = None
    reason_code: ReasonCode | None = None
    courier_known: bool | None = Field(default=None, description="assigned: false if the courier is unknown so far")
    auto: bool = Field(default=False, description="assigned: the gateway chose the courier (nearest_idle)")
    eta_at: AwareDatetime | None = Field(default=None, description="late_risk: the estimated arrival")
    media_id: str | None = Field(default=None, description="media: the uploaded file; delivered: its proof")
    stars: int | None = Field(default=None, description="rated: the customer's 1-5 stars")
    order: OrderView
    at: AwareDatetime = Field(default_factory=utcnow)


class ShopCommand(_Strict):
    """On `shops/{shop_id}/commands`: a shop terminal assigns a courier, marks packed, or cancels."""

    command: Literal["assign", "packed", "cancel"]
    order_id: Id
    courier_id: Id | None = Field(default=None, description="required for assign")
    reason: Text | None = None
    msg_id: Annotated[str, StringConstraints(max_length=64)] | None = None

    @model_validator(mode="after")
    def _courier_for_assign(self) -> ShopCommand:
        if self.command == "assign" and self.courier_id is None:
            raise ValueError("assign needs a courier_id")
        return self


# ---------------------------------------------------------------- couriers


class Change(_Out):
    """One field of an order that changed: the courier must confirm it."""

    field: Literal["recipient", "address", "items", "window", "notes", "priority"]
    old: Any
    new: Any


class Task(_Out):
    """On `couriers/{courier_id}/tasks`: work for a courier. Answer with a Receipt naming msg_id."""

    msg_id: str = Field(description="unique; a re-sent task keeps its msg_id")
    kind: Literal["assign", "update", "cancel", "ready_for_pickup"]
    order_id: str
    order: OrderView | None = Field(description="the order as it is now; null for cancel (drop the job: the phone "
                                    "keeps no customer data of an order that is no longer its own)")
    reason: str | None = None
    changes: list[Change] = Field(default=[], description="update: each changed field, with old and new value")
    confirm_required: bool = Field(default=False, description="confirm with a Receipt naming msg_id, confirm: true")
    at: AwareDatetime = Field(default_factory=utcnow)


class Receipt(_Strict):
    """On `couriers/{courier_id}/receipts`: the msg_ids of tasks the phone received (and, with read, showed)."""

    msg_ids: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=500
    )
    read: bool = False
    confirm: bool = Field(default=False, description="the courier confirms the changes of these update tasks")


CourierStatus = Literal["picked_up", "en_route", "arriving", "delivered", "failed", "exception", "rejected"]


class StatusUpdate(_Strict):
    """On `couriers/{courier_id}/status`: the courier moved one order along."""

    order_id: Id
    status: CourierStatus
    msg_id: Annotated[str, StringConstraints(max_length=64)] | None = None
    at: AwareDatetime | None = None
    lat: Latitude | None = None
    lon: Longitude | None = None
    reason: Text | None = None
    reason_code: ReasonCode | None = Field(default=None, description="exception: what went wrong (default other)")
    media_id: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="delivered: the proof-of-delivery photo uploaded for this order")

    @model_validator(mode="after")
    def _code_for_exceptions(self) -> StatusUpdate:
        if self.reason_code is not None and self.status != "exception":
            raise ValueError("reason_code goes with status exception")
        return self


class Location(BaseModel):
    """OwnTracks `_type: location`, on `couriers/{id}/gps` or `owntracks/{id}/{device}`."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    type_: Literal["location"] = Field(alias="_type")
    lat: Latitude
    lon: Longitude
    tst: int = Field(ge=0, description="epoch seconds of the fix")
    acc: float | None = Field(default=None, ge=0, description="accuracy, m")
    alt: float | None = Field(default=None, description="altitude, m")
    vac: float | None = Field(default=None, ge=0, description="vertical accuracy, m")
    vel: float | None = Field(default=None, ge=0, description="speed, km/h")
    cog: float | None = Field(default=None, ge=0, le=360, description="course over ground, degrees")
    batt: int | None = Field(default=None, ge=0, le=100, description="battery, %")
    tid: Annotated[str, StringConstraints(max_length=8)] | None = None


class Presence(_Strict):
    """On `couriers/{courier_id}/presence`, retained: a phone says it is online; its will says offline."""

    online: bool
    device: Id | None = Field(default=None, description="which of the courier's devices; set it when one courier "
                              "has several anonymous devices, so one's will does not mark the others offline")
    at: AwareDatetime | None = None


class Fix(_Out):
    lat: float
    lon: float
    tst: int
    acc: float | None = None
    vel: float | None = None
    cog: float | None = None
    batt: int | None = None


class CourierLocation(Fix):
    """Retained on `couriers/{courier_id}/location`: the newest fix (by tst) of that courier."""

    courier_id: str


class OrderState(_Out):
    """Retained on `orders/{order_id}/state`: where an order is, for anyone allowed to look."""

    order_id: str
    shop_id: str
    status: Status
    courier_id: str | None
    location: Fix | None
    courier_name: str | None = None
    distance_m: float | None = Field(default=None, description="straight line, the courier's newest fix to the "
                                     "address (when both are known)")
    eta_seconds: int | None = Field(default=None, description="once picked up: seconds until arrival, estimated")
    eta_at: AwareDatetime | None = Field(default=None, description="once picked up: estimated arrival time")
    unconfirmed_change: bool = Field(default=False, description="the courier has not confirmed the latest change")
    updated_at: AwareDatetime


class CourierOrder(_Out):
    order_id: str
    status: Status
    address: str
    window: Window | None = None
    eta_seconds: int | None = None
    eta_at: AwareDatetime | None = None


class OrderStateRequest(_Strict):
    """On `shops/{shop_id}/state/get`: a terminal asks where one of its orders is (status, courier, location, ETA),
    answered on `orders/{order_id}/state`; RabbitMQ keeps no retained states for the gateway's publishes."""

    order_id: Id


class CourierOrdersRequest(_Strict):
    """On `couriers/{courier_id}/orders/get`: a phone (re)connecting asks for its active orders. Where the broker
    keeps the retained list (the embedded one) it already has them; RabbitMQ keeps none for the gateway's publishes.
    An empty object."""


class CourierOrders(_Out):
    """Retained on `couriers/{courier_id}/orders`: the courier's active orders, so a phone that reconnects (or a
    second device) sees its work at once; also the answer to `couriers/{courier_id}/orders/get`."""

    courier_id: str
    orders: list[CourierOrder]
    at: AwareDatetime = Field(default_factory=utcnow)


class Sync(_Out):
    """On `couriers/{courier_id}/sync`: one device marked these tasks read; the courier's other devices follow."""

    read: list[str]
    at: AwareDatetime = Field(default_factory=utcnow)


# ---------------------------------------------------------------- the registry: shops and couriers


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Asia/Shanghai)") from None
    return name


Assignment = Literal["fixed", "nearest_idle"]
Locale = Literal["zh-CN", "en"]


class Shop(_Strict):
    """A registered shop (`fieldgate shops add`): where it is and how its orders find a courier."""

    shop_id: Id
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    lat: Latitude
    lon: Longitude
    assignment: Assignment = Field(default="fixed", description="fixed: the order's or the default courier; "
                                   "nearest_idle: the gateway picks one")
    default_courier: Id | None = None
    timezone: Annotated[str, AfterValidator(_zone)] = "Asia/Shanghai"
    locale: Locale = "zh-CN"
    arrival_radius_m: float | None = Field(default=None, gt=0, le=10_000,
                                           description="the arriving geofence; None: arrival_radius_m")
    quiet_hours: Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")] \
        | None = Field(default=None, description="HH:MM-HH:MM in the shop's time zone: non-urgent customer notices "
                       "wait until its end")
    require_proof: bool = Field(default=False, description="delivered needs a proof-of-delivery photo")


class Courier(_Strict):
    """A registered courier (`fieldgate couriers add`). Its phone goes to its shops only."""

    courier_id: Id
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    shops: list[Id] = Field(min_length=1)
    max_active: int | None = Field(default=None, ge=1, le=100, description="None: assignment.default_max_active")
    phone: Annotated[str, StringConstraints(pattern=r"^\+?[0-9][0-9 ()-]{2,31}$")] | None = None


# ---------------------------------------------------------------- customers: notices, conversations, media, ratings

NoticeKind = Literal["confirmed", "picked_up", "arriving", "delayed", "changed", "exception", "delivered", "failed"]


class Notice(_Out):
    """On `ordersys/notices` and `customers/{order_id}/notices`: a message for the customer, ready to send by SMS or
    app push (fieldgate sends none itself)."""

    notice_id: str
    order_id: str
    kind: NoticeKind
    text: str
    locale: Locale
    urgent: bool = Field(description="sent even in the shop's quiet hours")
    deferred: bool = Field(description="held back by the shop's quiet hours and sent at their end")
    at: AwareDatetime


ChatKind = Literal["text", "location", "media"]
ChatRole = Literal["shop", "courier", "customer"]


class ChatIn(_Strict):
    """On `shops/{shop_id}/chat/in`, `couriers/{courier_id}/chat/in`, `ordersys/chat/in`: one message of an order's
    conversation. The sender is who the topic (and credentials) say, never the payload."""

    order_id: Id
    msg_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="the sender's own id of the message: a repeat is stored once")
    kind: ChatKind = "text"
    text: Annotated[str, StringConstraints(min_length=1, max_length=2000)] | None = None
    lat: Latitude | None = None
    lon: Longitude | None = None
    media_id: Annotated[str, StringConstraints(max_length=64)] | None = None
    sender: Literal["customer"] | None = Field(default=None, alias="from",
                                               description="ordersys/chat/in: \"customer\" (the only sender there)")

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)

    @model_validator(mode="after")
    def _content(self) -> ChatIn:
        needed = {"text": self.text is not None, "location": self.lat is not None and self.lon is not None,
                  "media": self.media_id is not None}
        if not needed[self.kind]:
            raise ValueError({"text": "a text message needs text", "location": "a location needs lat and lon",
                              "media": "a media message needs media_id"}[self.kind])
        return self


class Participant(_Out):
    role: ChatRole
    id: str
    name: str | None = None


class ChatMessage(_Out):
    """On `shops/{shop_id}/chat`, `couriers/{courier_id}/chat`, `ordersys/chat`, `customers/{order_id}/chat`."""

    model_config = ConfigDict(extra="forbid", serialize_by_alias=True)

    seq: int = Field(description="the message's place in its order's conversation, from 1")
    msg_id: str
    order_id: str
    sender: Participant = Field(serialization_alias="from")
    kind: ChatKind
    text: str | None = None
    lat: float | None = None
    lon: float | None = None
    media_id: str | None = None
    at: AwareDatetime


class ChatRead(_Out):
    """On the same chat topics: a participant has read an order's conversation up to `read_up_to`."""

    order_id: str
    by: Participant
    read_up_to: int
    at: AwareDatetime


class ChatReadIn(_Strict):
    """On `…/chat/read`: I have read this order's conversation up to seq."""

    order_id: Id
    read_up_to: int = Field(ge=1)


class ChatHistoryRequest(_Strict):
    """On `…/chat/history/get`: the conversation of an order, after a seq."""

    order_id: Id
    after_seq: int = Field(default=0, ge=0)
    limit: int = Field(default=100, ge=1, le=500)


class ChatHistory(_Out):
    """On `…/chat/history`: a page of an order's conversation."""

    order_id: str
    messages: list[ChatMessage]
    more: bool
    at: AwareDatetime


MediaKind = Literal["proof_of_delivery", "packed", "chat"]


class MediaAck(_Out):
    """On `couriers/{courier_id}/media/ack` or `shops/{shop_id}/media/ack`: an upload is stored."""

    media_id: str
    order_id: str
    kind: MediaKind
    content_type: str
    size: int
    at: AwareDatetime


class Rating(_Strict):
    """On `ordersys/ratings/in`: the customer's rating of a delivered order, once."""

    order_id: Id
    stars: int = Field(ge=1, le=5)
    comment: Text | None = None


# ---------------------------------------------------------------- shops' open orders


class OpenOrdersRequest(_Strict):
    """On `shops/{shop_id}/open/get`: a terminal (re)starting asks for the shop's open orders."""

    request_id: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="echoed in the answer, so the asking terminal knows it is its own")
    after: Id | None = Field(default=None, description="page on: the last order_id of the previous answer")
    limit: int = Field(default=200, ge=1, le=500)


class OpenOrders(_Out):
    """On `shops/{shop_id}/open`: the shop's orders not yet delivered, failed or cancelled, by order_id."""

    shop_id: str
    request_id: str | None = None
    orders: list[OrderView]
    more: bool = Field(description="more open orders follow: ask again with after = the last order_id here")
    at: AwareDatetime = Field(default_factory=utcnow)


# ---------------------------------------------------------------- the embedded broker's own events


class DeviceEvent(_Out):
    """On `$fieldgate/devices/{courier_id}`, from the embedded broker: an authenticated courier's connection."""

    client_id: str
    online: bool
    how: Literal["connected", "disconnect", "lost", "timeout", "taken_over", "stopped"]
    at: AwareDatetime


class BrokerEvent(_Out):
    """On `$fieldgate/broker`: the embedded broker started; no connection of before exists any more."""

    event: Literal["started"]
    at: AwareDatetime


#: Every model exported to schemas/, by file stem.
SCHEMAS: dict[str, type[BaseModel]] = {
    "order": Order,
    "ack": Ack,
    "rejection": Rejection,
    "order-event": OrderEvent,
    "shop-command": ShopCommand,
    "task": Task,
    "receipt": Receipt,
    "status-update": StatusUpdate,
    "location": Location,
    "presence": Presence,
    "courier-location": CourierLocation,
    "order-state": OrderState,
    "open-orders-request": OpenOrdersRequest,
    "open-orders": OpenOrders,
    "courier-orders": CourierOrders,
    "courier-orders-request": CourierOrdersRequest,
    "order-state-request": OrderStateRequest,
    "sync": Sync,
    "notice": Notice,
    "chat-in": ChatIn,
    "chat-message": ChatMessage,
    "chat-read": ChatRead,
    "chat-read-in": ChatReadIn,
    "chat-history-request": ChatHistoryRequest,
    "chat-history": ChatHistory,
    "media-ack": MediaAck,
    "rating": Rating,
}
