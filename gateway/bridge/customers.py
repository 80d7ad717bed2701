"""The customer's side: notices, per-order conversations, photos and voice notes, ratings.

Like dispatch, this module feeds pure decisions (`gateway.core.notices`, `gateway.core.media`) with what the
store knows and hands the results to the gateway's `apply`, inside the transaction of the message that
caused them:

- notices: every timeline entry that makes one (`notices.kind_of`) becomes a Notice — sent at once on
  `ordersys/notices` and `customers/{order_id}/notices`, or, in the shop's quiet hours, kept in the
  `notices` table until their end (`due`); a newer one drops the waiting ones of its order;
- conversations: the sender is who the topic says (never the payload); a courier writes only in its
  current orders' conversations (earlier couriers read them), a shop in its own orders', the customer
  through the order system; every message gets the next `seq` of its order and goes to all participants;
- media: the bytes are sniffed (not trusted), stored content-addressed (`gateway.store.media`) before
  the row that names them, and referenced from the timeline and the conversation;
- ratings: once per delivered order.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime

from gateway.config import Settings
from gateway.core import contract, media, notices
from gateway.core.contract import Kind, Route
from gateway.core.lifecycle import Happening, NewId, OrderRecord, Outcome, Outgoing
from gateway.core.models import (
    Ack,
    ChatHistory,
    ChatHistoryRequest,
    ChatIn,
    ChatMessage,
    ChatRead,
    ChatReadIn,
    MediaAck,
    Notice,
    Participant,
    Rating,
    Shop,
    Status,
    StatusUpdate,
)
from gateway.core.payloads import parse
from gateway.errors import IllegalTransition, NotYours, PayloadError, Rejected, TooLarge, UnsupportedType
from gateway.store.media import MediaFiles
from gateway.store.tables import Store

log = logging.getLogger("fieldgate.customers")

Apply = Callable[[Outcome | None, datetime], list[Outgoing]]
Lookup = Callable[[str, str | None], OrderRecord]  # (order_id, msg_id) -> the order, or UnknownOrder


def _encode(model: Notice | ChatMessage | ChatRead | ChatHistory | MediaAck | Ack) -> bytes:
    return model.model_dump_json().encode()


class Customers:
    """Notices, conversations, media and ratings, over the gateway's store. Owned by the gateway's thread."""

    def __init__(self, store: Store, settings: Settings, new_id: NewId, apply: Apply, order: Lookup,
                 link: Callable[[OrderRecord, datetime], str | None]) -> None:
        self.store = store
        self.link = link  # the order's tracking link
        self.settings = settings
        self.new_id = new_id
        self.apply = apply
        self.order = order
        self.files = MediaFiles(settings.data_dir)

    # ------------------------------------------------------------------ notices

    def _shop(self, shop_id: str) -> Shop:
        """The registered shop, or what an unregistered one is taken to be."""
        return self.store.get_shop(shop_id) or Shop(shop_id=shop_id, name=shop_id, lat=0, lon=0)

    def notify(self, record: OrderRecord, happenings: list[Happening], now: datetime) -> list[Outgoing]:
        """The notices these timeline entries make: sent now, or kept for the end of the shop's quiet hours."""
        kinds = [(h, kind) for h in happenings if (kind := notices.kind_of(h.kind, h.status)) is not None]
        if not kinds:
            return []
        shop = self._shop(record.order.shop_id)
        link = self.link(record, now)
        out: list[Outgoing] = []
        for happening, kind in kinds:
            values = self._values(record, shop, happening) | {"tracking_url": link}
            text = notices.compose(kind, shop.locale, values, self.settings.notices.templates)
            urgent = notices.urgent(kind, record.order.priority)
            wait = None if urgent else notices.quiet_until(shop.quiet_hours, shop.timezone, now)
            notice = Notice(notice_id=self.new_id(), order_id=record.order_id, kind=kind, text=text, locale=shop.locale,
                            urgent=urgent, deferred=False, at=now)
            dropped = self.store.drop_waiting_notices(record.order_id, now)
            self.store.add_notice(notice, urgent, wait)
            log.info("notice %s", "kept for the end of quiet hours" if wait else "sent",
                     extra={"ctx": {"order_id": record.order_id, "kind": kind, "until": wait,
                                    "obsolete_dropped": dropped or None}})
            if wait is None:
                out += self._publish(notice)
        return out

    def _values(self, record: OrderRecord, shop: Shop, happening: Happening) -> dict[str, str | None]:
        tz = shop.timezone
        window = record.order.window
        eta_minutes: str | None = None
        if record.tracking.eta_seconds is not None:
            eta_minutes = str(max(1, math.ceil(record.tracking.eta_seconds / 60)))
        eta_at = happening.eta_at or record.tracking.eta_at
        return {
            "order_id": record.order_id,
            "shop_name": shop.name,
            "courier_name": record.courier_name or record.courier_id,
            "eta_minutes": eta_minutes,
            "eta_time": None if eta_at is None else notices.local(eta_at, tz).strftime("%H:%M"),
            "window_start": None if window is None else notices.local(window.start, tz).strftime("%H:%M"),
            "window_end": None if window is None else notices.local(window.end, tz).strftime("%H:%M"),
            "reason": notices.reason_text(shop.locale, happening.reason_code, happening.reason),
        }

    def _publish(self, notice: Notice) -> list[Outgoing]:
        payload = _encode(notice)
        return [Outgoing(contract.ORDERSYS_NOTICES, payload),
                Outgoing(contract.customer_topic(notice.order_id, "notices"), payload)]

    def due(self, now: datetime) -> list[Outgoing]:
        """Notices whose quiet hours have ended: sent (marked deferred), unless the order has moved on."""
        out: list[Outgoing] = []
        for notice, _ in self.store.due_notices(now):
            record = self.store.get_order(notice.order_id)
            if record is None or notices.obsolete(notice.kind, record.status):
                self.store.mark_notice(notice.notice_id, now, sent=False)
                continue
            self.store.mark_notice(notice.notice_id, now, sent=True)
            out += self._publish(notice.model_copy(update={"at": now}))
        return out

    # ------------------------------------------------------------------ who is talking

    def _participant(self, route: Route, record: OrderRecord | None) -> Participant:
        if route.courier_id is not None:
            name = self.store.courier_ref(route.courier_id).name
            return Participant(role="courier", id=route.courier_id, name=name)
        if route.shop_id is not None:
            return Participant(role="shop", id=route.shop_id, name=self._shop(route.shop_id).name)
        assert record is not None
        return Participant(role="customer", id=record.order_id, name=record.order.recipient.name.split()[0])

    def _member(self, record: OrderRecord, who: Participant, *, write: bool) -> None:
        """May `who` write in (or read) this order's conversation? Raises NotYours if not."""
        if who.role == "shop" and record.order.shop_id != who.id:
            raise NotYours(f"order {record.order_id} belongs to shop {record.order.shop_id}, not {who.id}",
                           order_id=record.order_id)
        if who.role == "courier" and record.courier_id != who.id:
            earlier = self.store.was_courier_of(record.order_id, who.id)
            if write or not earlier:
                raise NotYours(
                    f"courier {who.id} is not the courier of order {record.order_id}"
                    + (" any more: it may read the conversation, not write in it" if earlier else ""),
                    hint="A courier writes only in the conversations of the orders it carries.",
                    order_id=record.order_id)

    def _everyone(self, record: OrderRecord, payload: bytes) -> list[Outgoing]:
        """To every participant: the shop, the current courier, the order system and the customer's app."""
        topics = [contract.shop_topic(record.order.shop_id, "chat"), "ordersys/chat",
                  contract.customer_topic(record.order_id, "chat")]
        if record.courier_id is not None:
            topics.insert(1, contract.courier_topic(record.courier_id, "chat"))
        return [Outgoing(topic, payload) for topic in topics]

    @staticmethod
    def _history_topic(route: Route) -> str:
        if route.courier_id is not None:
            return contract.courier_topic(route.courier_id, "chat/history")
        if route.shop_id is not None:
            return contract.shop_topic(route.shop_id, "chat/history")
        return "ordersys/chat/history"

    # ------------------------------------------------------------------ conversations

    def handle(self, route: Route, payload: bytes, now: datetime) -> list[Outgoing]:
        """A message on one of the customer-side inbound topics."""
        limit = self.settings.bridge.max_payload_bytes
        match route.kind:
            case Kind.chat:
                message = parse(ChatIn, payload, max_bytes=limit)
                record = self.order(message.order_id, message.msg_id)
                return self.chat(route, record, message, now)
            case Kind.chat_read:
                read = parse(ChatReadIn, payload, max_bytes=limit)
                record = self.order(read.order_id, None)
                who = self._participant(route, record)
                self._member(record, who, write=False)
                mark = self.store.set_read(record.order_id, who, read.read_up_to, now)
                if mark is None:
                    return []
                return self._everyone(record, _encode(ChatRead(order_id=record.order_id, by=who, read_up_to=mark,
                                                               at=now)))
            case Kind.chat_history:
                request = parse(ChatHistoryRequest, payload, max_bytes=limit)
                record = self.order(request.order_id, None)
                self._member(record, self._participant(route, record), write=False)
                messages, more = self.store.chat_page(record.order_id, request.after_seq, request.limit)
                answer = ChatHistory(order_id=record.order_id, messages=messages, more=more, at=now)
                return [Outgoing(self._history_topic(route), _encode(answer))]
            case Kind.media:
                return self.upload(route, payload, now)
            case Kind.rating:
                return self.rate(parse(Rating, payload, max_bytes=limit), now)
        raise AssertionError(f"not a customer-side kind: {route.kind}")

    def chat(self, route: Route, record: OrderRecord, message: ChatIn, now: datetime) -> list[Outgoing]:
        who = self._participant(route, record)
        self._member(record, who, write=True)
        if message.kind == "media":
            found = self.store.media(message.media_id or "")
            if found is None or found["order_id"] != record.order_id:
                raise PayloadError(f"media {message.media_id} was not uploaded for order {record.order_id}",
                                   hint="Upload it first on …/media/<order_id>/chat and use the media_id of the ack.",
                                   order_id=record.order_id, msg_id=message.msg_id)
        stored, new = self.store.add_chat(record.order_id, message.msg_id, who, message.kind, now, text=message.text,
                                          lat=message.lat, lon=message.lon, media_id=message.media_id)
        if not new:
            log.info("chat message repeated", extra={"ctx": {"order_id": record.order_id, "msg_id": message.msg_id}})
            return []
        return self._everyone(record, _encode(stored))

    def history_for(self, courier_id: str, record: OrderRecord, now: datetime) -> list[Outgoing]:
        """A courier assigned mid-way gets the conversation so far."""
        messages, more = self.store.chat_page(record.order_id, 0, 500)
        if not messages:
            return []
        answer = ChatHistory(order_id=record.order_id, messages=messages, more=more, at=now)
        return [Outgoing(contract.courier_topic(courier_id, "chat/history"), _encode(answer))]

    # ------------------------------------------------------------------ photos and voice notes

    def upload(self, route: Route, data: bytes, now: datetime) -> list[Outgoing]:
        assert route.order_id is not None and route.media_kind is not None
        if route.media_kind not in ("proof_of_delivery", "packed", "chat"):
            raise PayloadError(f"unknown media kind {route.media_kind!r}",
                               hint="Upload to …/media/<order_id>/proof_of_delivery, …/packed or …/chat.",
                               order_id=route.order_id)
        limit = self.settings.media.max_bytes
        if len(data) > limit:
            raise TooLarge(f"file is {len(data)} bytes, more than the {limit} allowed",
                               hint="Send a smaller photo or a shorter voice note (media.max_bytes).",
                               order_id=route.order_id)
        content_type = media.sniff(data)
        if content_type is None:
            raise UnsupportedType(f"not a JPEG, PNG, WebP, OGG/Opus or M4A file (it starts {data[:8].hex(' ')})",
                               hint="Send the photo or voice note's own bytes as the payload, nothing around them.",
                               order_id=route.order_id)
        record = self.order(route.order_id, None)
        who = self._participant(route, record)
        self._member(record, who, write=True)
        sha = self.files.put(data)
        media_id = self.new_id()
        self.store.add_media(media_id, record.order_id, who, route.media_kind, content_type, len(data), sha, now)
        happening = Happening("media", record.status, f"{who.role}:{who.id}", courier_id=record.courier_id,
                              reason=route.media_kind, media_id=media_id)
        out = self.apply(Outcome(record=record, happenings=[happening], state_changed=False), now)
        message, _ = self.store.add_chat(record.order_id, f"media:{media_id}", who, "media", now, media_id=media_id)
        out += self._everyone(record, _encode(message))
        ack = MediaAck(media_id=media_id, order_id=record.order_id, kind=route.media_kind,  # type: ignore[arg-type]
                       content_type=content_type, size=len(data), at=now)
        ack_topic = (contract.courier_topic(who.id, "media/ack") if who.role == "courier"
                     else contract.shop_topic(who.id, "media/ack"))
        log.info("media stored", extra={"ctx": {"order_id": record.order_id, "media_id": media_id,
                                                "kind": route.media_kind, "bytes": len(data), "type": content_type}})
        return [*out, Outgoing(ack_topic, _encode(ack))]

    def proof(self, record: OrderRecord, update: StatusUpdate) -> str | None:
        """The proof-of-delivery photo of a `delivered`: the one the update names (it must be this order's), else
        the latest uploaded; a shop that requires one refuses `delivered` without it."""
        if update.status != "delivered":
            return None
        if update.media_id is not None:
            found = self.store.media(update.media_id)
            if found is None or found["order_id"] != record.order_id:
                raise PayloadError(f"media {update.media_id} was not uploaded for order {record.order_id}",
                                   hint="Name the media_id of the proof-of-delivery ack for this order.",
                                   order_id=record.order_id, msg_id=update.msg_id)
            return update.media_id
        proof = self.store.latest_media(record.order_id, "proof_of_delivery")
        shop = self.store.get_shop(record.order.shop_id)
        if proof is None and shop is not None and shop.require_proof:
            raise IllegalTransition(
                f"shop {shop.shop_id} requires a proof-of-delivery photo before order {record.order_id} is delivered",
                hint=f"Upload it on couriers/<your id>/media/{record.order_id}/proof_of_delivery, then report "
                "delivered (with its media_id).", order_id=record.order_id, msg_id=update.msg_id)
        return proof

    # ------------------------------------------------------------------ ratings

    def rate(self, rating: Rating, now: datetime) -> list[Outgoing]:
        record = self.order(rating.order_id, None)
        if record.status != Status.delivered:
            raise IllegalTransition(f"order {record.order_id} is {record.status}; only a delivered order is rated",
                                    order_id=record.order_id)
        if not self.store.add_rating(record.order_id, rating.stars, rating.comment, record.courier_id,
                                     record.order.shop_id, now):
            raise Rejected(f"order {record.order_id} was rated before", hint="A delivered order is rated once.",
                           order_id=record.order_id)
        happening = Happening("rated", record.status, "customer", courier_id=record.courier_id, stars=rating.stars,
                              reason=rating.comment)
        outcome = Outcome(record=record, happenings=[happening], state_changed=False,
                          acks=[Ack(kind="rated", order_id=record.order_id, status=record.status,
                                    courier_id=record.courier_id, reason=rating.comment, at=now)])
        return self.apply(outcome, now)

