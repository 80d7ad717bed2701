"""The customer's tracking link and what its page may show. Pure functions.

A link is `web.public_url` + `/t/{token}`. The token is keyed, not stored: HMAC-SHA256 of the order
id and a random nonce under the gateway's secret key (`<data_dir>/secret.key`, never in the
database), cut to 144 bits. The database keeps the nonce and the token's SHA-256, so the same link
is given again (a repeated order, a notice) and a visitor's token is found by its digest, while a
copy of fieldgate.db alone neither holds nor can make a working link. Purging the order's personal
data deletes the row: the link is dead. It also dies `web.tracking_hours` after the order ended.

What the page shows is decided here (`view`): status, the courier's first name, the ETA, and the
courier's position only between pickup and delivery (couriers' privacy: never before pickup,
never after the end). Never a phone number, an address, or anything of another order.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import AwareDatetime, BaseModel

from gateway.core.lifecycle import FINAL, OrderRecord
from gateway.core.models import ChatMessage, Locale, Shop, Status, Window

#: Token bits: at least 128 (issue 12); 144 is 24 characters of base64url.
TOKEN_BYTES = 18
#: Statuses in which the courier's position is shown to the customer.
POSITION_SHOWN = frozenset({Status.picked_up, Status.en_route, Status.arriving})


def token(key: bytes, order_id: str, nonce: str) -> str:
    """The order's tracking token: keyed by the gateway's secret, so only the gateway can make it."""
    mac = hmac.new(key, f"track\0{order_id}\0{nonce}".encode(), hashlib.sha256).digest()[:TOKEN_BYTES]
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def digest(text: str) -> str:
    """What the database keeps of a token, to find its order."""
    return hashlib.sha256(text.encode()).hexdigest()


def url(public_url: str, text: str) -> str:
    return f"{public_url.rstrip('/')}/t/{text}"


def expired(record: OrderRecord, ended_at: datetime | None, keep: timedelta, now: datetime) -> bool:
    """A finished order's link works for `keep` after it ended."""
    return record.status in FINAL and ended_at is not None and now - ended_at > keep


class Point(BaseModel):
    lat: float
    lon: float


class Line(BaseModel):
    """One chat message as the customer sees it: the shop's or courier's first name, or "mine"."""

    seq: int
    name: str
    mine: bool
    text: str | None
    at: AwareDatetime


class ShopFace(BaseModel):
    name: str
    timezone: str
    locale: Locale


class View(BaseModel):
    """What /t/{token} shows, whole (sent again at every change)."""

    order_id: str
    shop: ShopFace
    status: Status
    active: bool
    courier_name: str | None
    eta_at: AwareDatetime | None
    eta_seconds: int | None
    window: Window | None
    position: Point | None
    destination: Point | None
    chat_enabled: bool
    chat: list[Line]
    can_rate: bool
    rated: bool
    updated_at: AwareDatetime
    config: dict[str, str]


@dataclass(frozen=True)
class Facts:
    """What the view is made of, read from the store."""

    record: OrderRecord
    shop: Shop | None
    chat: list[ChatMessage]
    rated: bool


def first_name(name: str | None) -> str | None:
    """The first word of a name ("Wang Wei" → "Wang"): enough to greet the courier at the door."""
    return None if not name else name.split()[0]


def view(facts: Facts, config: dict[str, str]) -> View:
    record, shop = facts.record, facts.shop
    shown = record.status in POSITION_SHOWN and record.location is not None
    address = record.order.address
    track = record.tracking
    counting = record.active and record.picked_up
    return View(
        order_id=record.order_id,
        shop=ShopFace(name=shop.name if shop else record.order.shop_id,
                      timezone=shop.timezone if shop else "UTC", locale=shop.locale if shop else "en"),
        status=record.status,
        active=record.active,
        courier_name=first_name(record.courier_name) if record.active or record.status == Status.delivered else None,
        eta_at=track.eta_at if counting else None,
        eta_seconds=track.eta_seconds if counting else None,
        window=record.order.window,
        position=Point(lat=record.location.lat, lon=record.location.lon) if shown and record.location else None,
        destination=Point(lat=address.lat, lon=address.lon) if shown and address.lat is not None
        and address.lon is not None else None,
        chat_enabled=record.active,
        chat=[Line(seq=m.seq, name=first_name(m.sender.name) or m.sender.role, mine=m.sender.role == "customer",
                   text=m.text, at=m.at) for m in facts.chat],
        can_rate=record.status == Status.delivered and not facts.rated,
        rated=facts.rated,
        updated_at=record.updated_at,
        config=config,
    )
