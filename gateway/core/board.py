"""The shop terminal's board: which column an order stands in, what is wrong with it, what the shop may do
with it, and the couriers on the map. Pure functions of the stored state and the time.

Columns: new (no courier yet), assigned, packed, on_the_way (picked up, en route), arriving, done (ended
today, in the shop's time zone) and problems (an exception, or no courier found for too long). Problems
stand out on any card: exception, late_risk (the ETA, or the clock, is past the window), unconfirmed_change
(the courier has not confirmed the latest change), waiting_for_courier (the gateway found nobody) and
courier_offline (the assigned courier has no device online).
"""

from __future__ import annotations

import json
from datetime import datetime, time
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel

from gateway.core.geo import haversine_m
from gateway.core.lifecycle import OrderRecord
from gateway.core.models import Status, Window

Column = Literal["new", "assigned", "packed", "on_the_way", "arriving", "done", "problems"]
Problem = Literal["exception", "late_risk", "unconfirmed_change", "waiting_for_courier", "courier_offline"]
Action = Literal["assign", "reassign", "packed", "cancel"]

_COLUMN_OF: dict[Status, Column] = {
    Status.created: "new", Status.assigned: "assigned", Status.packed: "packed", Status.picked_up: "on_the_way",
    Status.en_route: "on_the_way", Status.arriving: "arriving", Status.delivered: "done", Status.failed: "done",
    Status.cancelled: "done", Status.exception: "problems",
}


class Card(BaseModel):
    """One order on the board."""

    order_id: str
    column: Column
    status: Status
    recipient: str  # first name only: the board is seen across the counter
    address: str
    lat: float | None
    lon: float | None
    window: Window | None
    priority: str
    courier_id: str | None
    courier_name: str | None
    eta_at: AwareDatetime | None
    status_since: AwareDatetime
    problems: list[Problem]
    actions: list[Action]


class Pin(BaseModel):
    """A courier on the shop's map and in its assign dialog."""

    courier_id: str
    name: str | None
    online: bool
    lat: float | None
    lon: float | None
    tst: int | None
    load: int  # active orders
    max_active: int
    distance_m: float | None  # straight line from the shop


def problems(record: OrderRecord, courier_online: bool | None, now: datetime) -> list[Problem]:
    found: list[Problem] = []
    if not record.active:
        return found
    d, window, eta = record.dispatch, record.order.window, record.tracking.eta_at
    if record.status == Status.exception:
        found.append("exception")
    if window is not None and ((eta is not None and eta > window.end) or now > window.end
                               or record.tracking.late_eta_at is not None):
        found.append("late_risk")
    if d.change_msg_id is not None:
        found.append("unconfirmed_change")
    if record.courier_id is None and (d.waiting_announced or d.alerted):
        found.append("waiting_for_courier")
    if record.courier_id is not None and courier_online is False:
        found.append("courier_offline")
    return found


def actions(record: OrderRecord) -> list[Action]:
    """What the terminal offers: the ShopCommands the gateway would accept now."""
    if not record.active:
        return []
    base = record.progress if record.status == Status.exception else record.status
    out: list[Action] = []
    if record.courier_id is None:
        out.append("assign")
    elif record.status == Status.exception or not record.picked_up:
        out.append("reassign")
    if base in (Status.created, Status.assigned):
        out.append("packed")
    return [*out, "cancel"]


def card(record: OrderRecord, status_since: datetime, courier_online: bool | None, now: datetime) -> Card:
    order = record.order
    found = problems(record, courier_online, now)
    column = "problems" if "waiting_for_courier" in found else _COLUMN_OF[record.status]
    return Card(
        order_id=record.order_id, column=column, status=record.status,
        recipient=order.recipient.name.split()[0], address=order.address.text,
        lat=order.address.lat, lon=order.address.lon, window=order.window, priority=order.priority,
        courier_id=record.courier_id, courier_name=record.courier_name,
        eta_at=record.tracking.eta_at if record.active else None, status_since=status_since,
        problems=found, actions=actions(record))


def start_of_day(now: datetime, timezone: str) -> datetime:
    """Midnight today in the shop's time zone: "done today" starts there."""
    zone = ZoneInfo(timezone)
    return datetime.combine(now.astimezone(zone).date(), time(), zone)


def pin(row: dict[str, Any], shop_at: tuple[float, float] | None, default_max_active: int) -> Pin:
    """A courier row of the store (`Queries.couriers`) on the shop's map."""
    fix = None if row["fix_json"] is None else json.loads(row["fix_json"])
    lat, lon = (fix["lat"], fix["lon"]) if fix else (None, None)
    far = None if fix is None or shop_at is None else round(haversine_m(shop_at[0], shop_at[1], lat, lon))
    return Pin(courier_id=row["courier_id"], name=row["name"], online=bool(row["online"]), lat=lat, lon=lon,
               tst=fix["tst"] if fix else None, load=row["active_orders"],
               max_active=row["max_active"] or default_max_active, distance_m=far)
