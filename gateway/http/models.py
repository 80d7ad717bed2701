"""What the HTTP side answers: pydantic models, so /openapi.json describes every body exactly.

Requests are the topic contract's own models (an Order, a ShopCommand, a file's bytes): one
validation, whichever way a message comes (`gateway.core.models`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.core.models import Fix, MediaAck, OrderState, OrderView, Status


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrderAccepted(_Body):
    """The order is committed (202), or was already, identically (200, duplicate)."""

    order_id: str
    status: Status
    duplicate: bool = Field(description="true: this exact order was accepted before (a retry); nothing changed")
    tracking_url: str | None = Field(default=None, description="the customer's tracking page (as on the accepted "
                                     "Ack)")


class CommandDone(_Body):
    """The command is applied (done) or changed nothing (unchanged: the order was already so)."""

    order_id: str
    result: Literal["done", "unchanged"]
    status: Status
    order: OrderView


class MediaStored(MediaAck):
    """The file is stored (as the media ack on MQTT says)."""


class ChatPosted(_Body):
    """The message is in the conversation (seq), or was already (duplicate: the same msg_id before)."""

    order_id: str
    seq: int | None
    duplicate: bool


class OrdersPage(_Body):
    orders: list[OrderView]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class TimelineEntry(_Body):
    at: datetime
    kind: str
    status: Status
    actor: str
    courier_id: str | None = None
    reason: str | None = None
    media_id: str | None = None


class OrderDetail(_Body):
    """An order: as placed, where it is now (location, ETA), and everything that happened to it."""

    order: OrderView
    state: OrderState
    timeline: list[TimelineEntry]


class CourierSummary(_Body):
    courier_id: str
    name: str | None
    registered: bool
    online: bool | None = Field(description="a device of the courier is connected; null: never heard from")
    last_seen_at: datetime | None
    fix: Fix | None = Field(description="the courier's newest GPS fix")
    shops: list[str]
    devices: list[str] = Field(description="its devices, '(off)' after those offline")
    active_orders: list[str]
    unreceived_tasks: int


class Couriers(_Body):
    couriers: list[CourierSummary]


class Health(_Body):
    status: Literal["ok", "not ready"]
    checks: dict[str, bool] = Field(default={}, description="readyz: each part and whether it is ready")
