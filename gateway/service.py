"""The gateway's core: one inbound MQTT message in, rows written and outbound messages queued.

No MQTT here: `Gateway.handle_batch` takes (topic, payload) pairs, validates each against its
model, asks `gateway.lifecycle` what it means, writes the result and the messages to publish
(the outbox) in one SQLite transaction, and returns the outbox rows for the bridge to send.
A refused message becomes a Rejection on the sender's errors topic plus a dead-letter row;
nothing a client sends can raise out of here.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from gateway import contract, lifecycle
from gateway.config import BridgeSettings
from gateway.contract import Kind, Route
from gateway.errors import PayloadError, Rejected, UnknownOrder
from gateway.lifecycle import Outcome, Outgoing
from gateway.models import (
    Ack,
    CourierLocation,
    FieldProblem,
    Fix,
    Location,
    Order,
    Presence,
    Receipt,
    Rejection,
    ShopCommand,
    StatusUpdate,
)
from gateway.store import Store

log = logging.getLogger("fieldgate.gateway")

M = TypeVar("M", bound=BaseModel)

#: OwnTracks message types that are valid but carry nothing fieldgate uses.
OWNTRACKS_IGNORED = frozenset(
    {"transition", "waypoint", "waypoints", "card", "cmd", "status", "steps", "beacon", "encrypted", "configuration"}
)


@dataclass(frozen=True)
class Inbound:
    """One message as the bridge received it."""

    topic: str
    payload: bytes


def _problems(exc: ValidationError) -> list[dict[str, str]]:
    return [{"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in exc.errors()]


def parse(model: type[M], payload: bytes, *, max_bytes: int) -> M:
    """Validate a payload against its model, or raise PayloadError saying exactly what is wrong."""
    if len(payload) > max_bytes:
        raise PayloadError(
            f"payload is {len(payload)} bytes, more than the {max_bytes} allowed",
            hint="Send smaller messages; the limit is bridge.max_payload_bytes in broker.yaml.",
        )
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        errors = exc.errors()
        if any(e["type"] == "json_invalid" for e in errors):
            raise PayloadError(
                f"payload is not valid JSON ({errors[0]['msg'].removeprefix('Invalid JSON: ')})",
                hint="Send one UTF-8 JSON object per message.",
                errors=_problems(exc),
            ) from None
        fields = "; ".join(f"{p['loc'] or '(payload)'}: {p['msg']}" for p in _problems(exc))
        raise PayloadError(
            f"payload is not a valid {model.__name__}: {fields}",
            hint=f"See schemas/ for the {model.__name__} JSON Schema.",
            errors=_problems(exc),
        ) from None


def _guess(payload: bytes, key: str) -> str | None:
    """Best-effort read of one string field of a refused payload, for the Rejection."""
    try:
        value = json.loads(payload).get(key)
    except (ValueError, AttributeError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, str) and len(value) <= 64 else None


class Gateway:
    """Applies inbound messages to the store. Owned by one thread (the bridge's worker)."""

    def __init__(
        self,
        store: Store,
        settings: BridgeSettings,
        *,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.new_id = new_id
        # Write-through caches of the couriers table (this Gateway is its only writer); cleared whenever
        # a rollback may have undone what they remember.
        self._seen: dict[str, float] = {}  # courier -> when "online, last seen" was last written
        self._online: dict[str, bool | None] = {}  # courier -> online as stored
        self._newest_tst: dict[str, int | None] = {}  # courier -> tst of its newest fix

    def now(self) -> datetime:
        """The clock as a UTC datetime, to the millisecond (what the store keeps)."""
        at = datetime.fromtimestamp(self.clock(), UTC)
        return at.replace(microsecond=at.microsecond // 1000 * 1000)

    # ------------------------------------------------------------------ batches

    def handle_batch(self, messages: Iterable[Inbound]) -> list[tuple[int, Outgoing]]:
        """Apply messages in one transaction; return the outbox rows it queued (publish them in order).

        Of several retained messages for one topic (an order's state moved by many GPS fixes), only
        the last is queued: a retained topic's subscribers only ever see the latest anyway.
        """
        out: list[Outgoing] = []
        try:
            with self.store.transaction():
                for message in messages:
                    out.extend(self._handle_one(message))
                return self.store.enqueue(latest_retained(out), self.now())
        except BaseException:
            self._forget_couriers()
            raise

    def _forget_couriers(self) -> None:
        self._seen.clear()
        self._newest_tst.clear()
        self._online.clear()

    def _was_online(self, courier_id: str) -> bool | None:
        if courier_id not in self._online:
            self._online[courier_id] = self.store.courier_online(courier_id)
        return self._online[courier_id]

    def _heard_from(self, courier_id: str, now: datetime) -> list[Outgoing]:
        """The courier sent something, so it is online; its last-seen time is written at most once a second.
        A courier back from offline is announced to the shops of its active orders."""
        was = self._was_online(courier_id)
        stamp = now.timestamp()
        if was is not True or stamp - self._seen.get(courier_id, float("-inf")) >= 1.0:
            self.store.touch_courier(courier_id, now)
            self._seen[courier_id] = stamp
            self._online[courier_id] = True
        return self._announce(courier_id, True, now) if was is False else []

    def _presence(self, courier_id: str, now: datetime, online: bool) -> list[Outgoing]:
        """A presence message or OwnTracks' last will; a change is announced to the shops of its active orders."""
        was = self._was_online(courier_id)
        self.store.touch_courier(courier_id, now, online=online, presence=True)
        self._seen.pop(courier_id, None)
        self._online[courier_id] = online
        log.info("courier presence", extra={"ctx": {"courier_id": courier_id, "online": online}})
        return self._announce(courier_id, online, now) if was is not online and (was is not None or not online) else []

    def _announce(self, courier_id: str, online: bool, now: datetime) -> list[Outgoing]:
        """Tell the shop of each active order of this courier (timeline + OrderEvent) that it went on/offline."""
        kind = "courier_online" if online else "courier_offline"
        out: list[Outgoing] = []
        for record in self.store.active_orders_of(courier_id):
            happening = lifecycle.Happening(kind, record.status, f"courier:{courier_id}", courier_id=courier_id)
            out.extend(self._apply(Outcome(record=record, happenings=[happening], state_changed=False), now))
        return out

    def _handle_one(self, message: Inbound) -> list[Outgoing]:
        now = self.now()
        route: Route | None = None
        try:
            route = contract.parse_inbound(message.topic)
            with self.store.savepoint():
                return self._dispatch(route, message.payload, now)
        except Rejected as exc:
            self._forget_couriers()
            return self._reject(route, message, exc, now)
        except Exception:
            self._forget_couriers()
            log.exception("internal error while handling a message", extra={"ctx": {"topic": message.topic}})
            exc = Rejected(
                "the gateway failed to process this message (internal error)",
                hint="This is a fieldgate bug; the message is kept as a dead letter for an operator.",
            )
            return self._reject(route, message, exc, now)

    def _reject(self, route: Route | None, message: Inbound, exc: Rejected, now: datetime) -> list[Outgoing]:
        """Dead-letter a refused message; return the Rejection (and, for orders, the Ack) to publish."""
        order_id = exc.order_id or _guess(message.payload, "order_id")
        msg_id = exc.msg_id or _guess(message.payload, "msg_id")
        log.warning(
            "rejected: %s",
            exc.message,
            extra={"ctx": {"topic": message.topic, "order_id": order_id, "bytes": len(message.payload)}},
        )
        self.store.add_dead_letter(
            message.topic, message.payload, exc.message, exc.hint, now,
            keep_bytes=self.settings.dead_letter_keep_bytes, order_id=order_id, msg_id=msg_id,
        )
        if order_id is not None and not isinstance(exc, UnknownOrder):
            self.store.add_rejection_event(order_id, _actor(route), exc.message, now)
        rejection = Rejection(
            reason=exc.message,
            topic=message.topic,
            hint=exc.hint,
            order_id=order_id,
            msg_id=msg_id,
            errors=[FieldProblem(**e) for e in exc.errors],
            at=now,
        )
        errors_topic = route.errors_topic if route else _errors_topic_of_unknown(message.topic)
        out = [Outgoing(errors_topic, rejection.model_dump_json().encode())]
        if route is not None and route.kind == Kind.order:
            ack = Ack(kind="rejected", order_id=order_id, reason=exc.message, at=now)
            out.append(Outgoing(contract.ORDERSYS_ACKS, ack.model_dump_json().encode()))
        return out

    # ------------------------------------------------------------------ dispatch by kind

    def _dispatch(self, route: Route, payload: bytes, now: datetime) -> list[Outgoing]:
        limit = self.settings.max_payload_bytes
        match route.kind:
            case Kind.order:
                order = parse(Order, payload, max_bytes=limit)
                existing = self.store.get_order(order.order_id)
                outcome = lifecycle.on_order(existing, order, now, self.new_id)
                if outcome is None:
                    log.info("duplicate order ignored", extra={"ctx": {"order_id": order.order_id}})
                return self._apply(outcome, now)
            case Kind.command:
                assert route.shop_id is not None
                command = parse(ShopCommand, payload, max_bytes=limit)
                record = self._order(command.order_id, command.msg_id)
                return self._apply(lifecycle.on_command(record, route.shop_id, command, now, self.new_id), now)
            case Kind.status:
                assert route.courier_id is not None
                update = parse(StatusUpdate, payload, max_bytes=limit)
                announced = self._heard_from(route.courier_id, now)
                record = self._order(update.order_id, update.msg_id)
                return announced + self._apply(lifecycle.on_status(record, route.courier_id, update, now), now)
            case Kind.receipt:
                assert route.courier_id is not None
                return self._receipt(route, payload, now)
            case Kind.presence:
                assert route.courier_id is not None
                presence = parse(Presence, payload, max_bytes=limit)
                return self._presence(route.courier_id, now, presence.online)
            case Kind.gps | Kind.owntracks:
                return self._location(route, payload, now)
        raise AssertionError(f"unrouted kind {route.kind}")

    def _order(self, order_id: str, msg_id: str | None) -> lifecycle.OrderRecord:
        record = self.store.get_order(order_id)
        if record is None:
            raise UnknownOrder(
                f"order {order_id} is unknown to the gateway",
                hint="Check the order_id; an order exists once the order system published it on orders/in.",
                order_id=order_id,
                msg_id=msg_id,
            )
        return record

    def _apply(self, outcome: Outcome | None, now: datetime) -> list[Outgoing]:
        """Write an outcome (order row, timeline, tasks) and return the messages it publishes."""
        if outcome is None:
            return []
        record = outcome.record
        if outcome.state_changed:
            self.store.put_order(record)
        self.store.add_happenings(record.order_id, outcome.happenings, now)
        retry_at = self.clock() + self.settings.task_retry_seconds
        for courier_id, task in outcome.tasks:
            payload = task.model_dump_json().encode()
            self.store.add_task(courier_id, task.msg_id, task.order_id, task.kind, payload, now, retry_at)
        for h in outcome.happenings:
            log.info(
                "order %s", h.kind,
                extra={"ctx": {"order_id": record.order_id, "status": h.status.value, "actor": h.actor,
                               "courier_id": h.courier_id}},
            )
        return lifecycle.messages_for(outcome)

    def _receipt(self, route: Route, payload: bytes, now: datetime) -> list[Outgoing]:
        """Mark tasks received; msg_ids the courier never got are refused, the others still count."""
        assert route.courier_id is not None
        receipt = parse(Receipt, payload, max_bytes=self.settings.max_payload_bytes)
        out = self._heard_from(route.courier_id, now)
        changes, unknown = self.store.receive_tasks(route.courier_id, receipt.msg_ids, receipt.read, now)
        for msg_id, order_id, kind in changes:
            record = self.store.get_order(order_id)
            assert record is not None
            outcome = lifecycle.on_task_received(record, route.courier_id, msg_id, kind == "read_by_courier", now)
            out.extend(self._apply(outcome, now))
        if unknown:
            exc = Rejected(
                f"courier {route.courier_id} has no task with msg_id {', '.join(unknown)}",
                hint="Send receipts for msg_ids of tasks received on your own couriers/<id>/tasks topic.",
                msg_id=unknown[0],
            )
            out.extend(self._reject(route, Inbound(route.topic, payload), exc, now))
        return out

    def _location(self, route: Route, payload: bytes, now: datetime) -> list[Outgoing]:
        assert route.courier_id is not None
        courier_id = route.courier_id
        if route.kind == Kind.owntracks:
            kind = _guess(payload, "_type")
            if kind == "lwt":
                return self._presence(courier_id, now, False)
            if kind in OWNTRACKS_IGNORED:
                return []
        loc = parse(Location, payload, max_bytes=self.settings.max_payload_bytes)
        return self._heard_from(courier_id, now) + self._fix(courier_id, route.device or "gps", loc, now)

    def _fix(self, courier_id: str, device: str, loc: Location, now: datetime) -> list[Outgoing]:
        """Store a fix; if it is the courier's newest, retain it and copy it into its active orders' state."""
        if not self.store.add_fix(courier_id, device, loc, now):
            return []
        fix = Fix(lat=loc.lat, lon=loc.lon, tst=loc.tst, acc=loc.acc, vel=loc.vel, cog=loc.cog, batt=loc.batt)
        if courier_id not in self._newest_tst:
            newest = self.store.courier_fix(courier_id)
            self._newest_tst[courier_id] = None if newest is None else newest.tst
        newest_tst = self._newest_tst[courier_id]
        if newest_tst is not None and fix.tst <= newest_tst:
            return []
        self.store.set_fix(courier_id, fix)
        self._newest_tst[courier_id] = fix.tst
        located = CourierLocation(courier_id=courier_id, **fix.model_dump())
        out = [Outgoing(contract.courier_topic(courier_id, "location"), located.model_dump_json().encode(), True)]
        for record in self.store.active_orders_of(courier_id):
            out.extend(self._apply(lifecycle.on_fix(record, fix, now), now))
        return out

    # ------------------------------------------------------------------ task re-sends

    def due_resends(self) -> list[Outgoing]:
        """Tasks with no receipt after task_retry_seconds, for couriers online now; reschedules them."""
        now = self.clock()
        with self.store.transaction():
            due = self.store.due_tasks(now)
            for task in due:
                self.store.reschedule_task(task.msg_id, now + self.settings.task_retry_seconds)
        for task in due:
            log.info(
                "task re-sent", extra={"ctx": {"msg_id": task.msg_id, "courier_id": task.courier_id,
                                               "order_id": task.order_id, "attempt": task.attempts + 1}},
            )
        return [Outgoing(contract.courier_topic(t.courier_id, "tasks"), t.payload) for t in due]


def latest_retained(messages: list[Outgoing]) -> list[Outgoing]:
    """Drop every retained message that a later retained message for the same topic replaces."""
    last = {m.topic: i for i, m in enumerate(messages) if m.retain}
    return [m for i, m in enumerate(messages) if not m.retain or last[m.topic] == i]


def _actor(route: Route | None) -> str:
    if route is None:
        return "unknown"
    if route.courier_id is not None:
        return f"courier:{route.courier_id}"
    if route.shop_id is not None:
        return f"shop:{route.shop_id}"
    return "ordersys"


def _errors_topic_of_unknown(topic: str) -> str:
    """Where to tell the sender of a message on a topic outside the contract."""
    parts = topic.split("/")
    if len(parts) >= 2 and parts[0] in ("couriers", "owntracks") and parts[1]:
        return contract.courier_topic(parts[1], "errors")
    if len(parts) >= 2 and parts[0] == "shops" and parts[1]:
        return contract.shop_topic(parts[1], "errors")
    return contract.ORDERSYS_ERRORS
