"""The gateway's core: one inbound MQTT message in, rows written and outbound messages queued.

No MQTT here: `Gateway.handle_batch` takes (topic, payload) pairs, validates each against its
model, asks `gateway.core.lifecycle` what it means, writes the result and the messages to publish
(the outbox) in one SQLite transaction, and returns the outbox rows for the bridge to send.
A refused message becomes a Rejection on the sender's errors topic plus a dead-letter row;
nothing a client sends can raise out of here.

Presence is per device. A courier is online while any of its devices is. Where the embedded broker
knows a connection's authenticated courier, the device is that connection (its client id) and the
broker's `$fieldgate/devices/…` events say when it comes and goes (clean DISCONNECT, lost, keep-alive
timeout, taken over); anonymous clients and external brokers keep the presence-topic/will mechanism
(device: the payload's `device`, else "presence"; OwnTracks: the topic's device).
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway import metrics
from gateway.bridge.customers import Customers
from gateway.bridge.dispatch import Dispatcher
from gateway.config import Settings
from gateway.core import contract, lifecycle, tracking
from gateway.core.acl import Identity, Role
from gateway.core.contract import Kind, Route
from gateway.core.lifecycle import Outcome, Outgoing
from gateway.core.models import (
    Ack,
    CourierLocation,
    CourierOrdersRequest,
    DeviceEvent,
    FieldProblem,
    Fix,
    Location,
    OpenOrders,
    OpenOrdersRequest,
    Order,
    OrderStateRequest,
    OrderView,
    Presence,
    Receipt,
    Rejection,
    ShopCommand,
    StatusUpdate,
    Sync,
)
from gateway.core.payloads import parse
from gateway.core.webhooks import Verdict
from gateway.errors import InternalError, KeyReused, PayloadError, Rejected, StoreBusy, UnknownOrder
from gateway.store.datadir import secret_key
from gateway.store.tables import Delivery, Store

log = logging.getLogger("fieldgate.gateway")

#: OwnTracks message types that are valid but carry nothing fieldgate uses.
OWNTRACKS_IGNORED = frozenset(
    {"transition", "waypoint", "waypoints", "card", "cmd", "status", "steps", "beacon", "encrypted", "configuration"}
)
#: The device of a courier's presence-topic messages and traffic when nothing names one.
PRESENCE_DEVICE = "presence"


#: An answer to a waiting sender: HTTP status and body.
Reply = tuple[int, bytes]
#: How long an HTTP Idempotency-Key is honoured.
IDEMPOTENCY_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class Handled:
    """What one message did: what it published, the Rejected it raised (None if it was applied), and the order it
    names as it is now (None if it names none the gateway knows)."""

    published: list[Outgoing]
    refused: Rejected | None
    order: OrderView | None = None


@dataclass(frozen=True)
class Inbound:
    """One message as the bridge received it; `origin` is (client id, identity) of its publisher where the
    transport knows it (the embedded broker, in process)."""

    topic: str
    payload: bytes
    origin: tuple[str, Identity] | None = None


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
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.store = store
        self.settings = settings
        self.limits = settings.bridge
        self.clock = clock
        self.new_id = new_id
        # Write-through caches of the couriers table (this Gateway is its only writer); cleared whenever
        # a rollback may have undone what they remember.
        self._seen: dict[str, float] = {}  # courier -> when its last-seen time was last written
        self._online: dict[str, bool | None] = {}  # courier -> online as stored
        self._newest: dict[str, Fix | None] = {}  # courier -> its newest fix
        self._counted: collections.Counter[str] = collections.Counter()  # inbound messages by topic class, counted
        # in metrics after the commit
        self._fixes: list[tuple[str, str, Location, datetime]] = []  # GPS fixes to store at the transaction's end
        #: courier -> (its fixes in this transaction, each newer than the last, and its newest before): applied once,
        #: at the end (`_moves`)
        self._moved: dict[str, tuple[list[Fix], Fix | None]] = {}
        self._couriers_changed: set[str] = set()  # couriers whose active orders changed in this transaction
        self._now: tuple[int, datetime] = (-1, datetime.min)  # the last `now()`, by its millisecond
        #: Called after each commit with the messages it published and how many webhook deliveries it made.
        self.on_commit: Callable[[list[Outgoing], int], None] | None = None
        #: Where customers open tracking links (the HTTP side sets it to its own address if web.public_url is "").
        self.public_url = settings.web.public_url or f"http://{settings.http.host}:{settings.http.port}"
        self.key = secret_key(store.directory or settings.data_dir)  # beside fieldgate.db, or in the data dir
        self.dispatch = Dispatcher(store, settings, new_id, self._apply)
        self.customers = Customers(store, settings, new_id, self._apply, self._order, self._tracking_url)

    def now(self) -> datetime:
        """The clock as a UTC datetime, to the millisecond (what the store keeps)."""
        ms = int(self.clock() * 1000)
        if ms != self._now[0]:  # a batch asks many times within one millisecond
            self._now = (ms, datetime.fromtimestamp(ms / 1000, UTC))
        return self._now[1]

    # ------------------------------------------------------------------ batches

    def handle_batch(self, messages: Iterable[Inbound], *, also: Callable[[], None] | None = None,
                     ) -> list[tuple[int, Outgoing]]:
        """Apply messages in one transaction; return the outbox rows it queued (publish them in order). `also`
        writes in the same transaction first (the embedded broker's rows).

        Of several retained messages for one topic (an order's state moved by many GPS fixes), only
        the last is queued: a retained topic's subscribers only ever see the latest anyway.
        """
        return self._in_transaction(lambda: [m for message in messages for m in self._handle_one(message)[0]],
                                    also=also)

    def request(self, message: Inbound, respond: Callable[[Handled], Reply], *, key: tuple[str, str] | None = None,
                refused: Rejected | None = None) -> tuple[list[tuple[int, Outgoing]], Reply]:
        """Handle one message whose sender waits for an answer (the HTTP side) exactly as if it had come from the
        broker, and make that answer with `respond` in the same transaction.

        `key` is (user, Idempotency-Key): a key answered with a 2xx in the last 24 hours gets that answer again
        (if the request is the same; a different one is refused as a conflict). `refused` is a refusal decided
        before the message could be read (a body over the size limit): dead letter and Rejection as usual."""
        digest = hashlib.sha256(message.topic.encode() + b"\0" + message.payload).hexdigest()
        replies: list[Reply] = []
        key_name = "" if key is None else key[1]

        def work() -> list[Outgoing]:
            now = self.now()
            kept = None if key is None else self.store.idempotent(*key, now - IDEMPOTENCY_WINDOW)
            if kept is not None and kept[0] == digest:
                replies.append((kept[1], kept[2]))
                return []
            if kept is not None:
                refusal: Rejected | None = KeyReused(
                    f"Idempotency-Key {key_name!r} was used for a different request in the last 24 hours",
                    hint="Use a new key for a new request; repeat a request with its own key and the same body.")
            else:
                refusal = refused
            route = contract.parse_inbound(message.topic)
            if refusal is not None:
                published = self._reject(route, message, refusal, now)
            else:
                published, refusal = self._handle_one(message)
            order_id = route.order_id or _guess(message.payload, "order_id")
            record = None if order_id is None else self.store.get_order(order_id)
            handled = Handled(published, refusal, None if record is None else record.view())
            reply = respond(handled)
            if key is not None and kept is None and 200 <= reply[0] < 300:
                self.store.save_idempotent(*key, digest, *reply, now, forget_before=now - IDEMPOTENCY_WINDOW)
            replies.append(reply)
            return handled.published

        return self._in_transaction(work), replies[0]

    def _in_transaction(self, work: Callable[[], list[Outgoing]], *, also: Callable[[], None] | None = None,
                        ) -> list[tuple[int, Outgoing]]:
        """Run `work` in one transaction with its outbox rows, the retained active-order lists of the couriers it
        touched (couriers/{courier_id}/orders), and the webhook deliveries of the events it made."""
        try:
            with self.store.transaction():
                if also is not None:
                    also()
                out = work()
                now = self.now()
                self.store.add_fixes(self._fixes)
                self._fixes.clear()
                out += self._moves(now)
                out += [self.dispatch.courier_orders(c, now) for c in sorted(self._couriers_changed)]
                self._couriers_changed.clear()
                out = latest_retained(out)
                deliveries = self.store.add_deliveries(out, now)
                rows = self.store.enqueue(out, now)
        except BaseException:
            self._forget_couriers()
            self._fixes.clear()
            self._moved.clear()
            self._couriers_changed.clear()
            self._counted.clear()
            raise
        for topic_class, n in self._counted.items():
            metrics.MESSAGES_IN.labels(topic_class).inc(n)
        self._counted.clear()
        if self.on_commit is not None and out:
            self.on_commit(out, deliveries)
        return rows

    def _forget_couriers(self) -> None:
        """A rollback may have undone what the caches of the couriers table remember: forget them (not the work
        the transaction's earlier messages left for its end: `_moved`, `_couriers_changed`)."""
        self._seen.clear()
        self._newest.clear()
        self._online.clear()
        self.dispatch.forget()

    def _handle_one(self, message: Inbound) -> tuple[list[Outgoing], Rejected | None]:
        """The messages one inbound message publishes, and the Rejected it raised (None if it was applied).

        A run of fixes is applied once, at its end (`_moves`); any other message first has the fixes before it
        applied, so it sees the couriers where they are (a breakdown reported after a fix is handed on from there)."""
        now = self.now()
        route: Route | None = None
        self._counted[metrics.topic_class(message.topic)] += 1
        moved: list[Outgoing] = []
        try:
            route = contract.parse_inbound(message.topic)
            if self._moved and route.kind not in (Kind.gps, Kind.owntracks):
                moved = self._moves(now)
            with self.store.savepoint():
                return moved + self._dispatch(route, message, now), None
        except Rejected as exc:
            self._forget_couriers()
            return moved + self._reject(route, message, exc, now), exc
        except StoreBusy:
            raise  # not this message's fault: the whole batch is run again
        except Exception:
            self._forget_couriers()
            log.exception("internal error while handling a message", extra={"ctx": {"topic": message.topic}})
            exc = InternalError(
                "the gateway failed to process this message (internal error)",
                hint="This is a fieldgate bug; the message is kept as a dead letter for an operator.",
            )
            return moved + self._reject(route, message, exc, now), exc

    def _reject(self, route: Route | None, message: Inbound, exc: Rejected, now: datetime) -> list[Outgoing]:
        """Dead-letter a refused message; return the Rejection (and, for orders, the Ack) to publish."""
        exc.order_id = order_id = exc.order_id or _guess(message.payload, "order_id")  # for the HTTP problem too
        exc.msg_id = msg_id = exc.msg_id or _guess(message.payload, "msg_id")
        metrics.REJECTIONS.labels(metrics.reason_of(exc)).inc()
        log.warning(
            "rejected: %s",
            exc.message,
            extra={"ctx": {"topic": message.topic, "order_id": order_id, "bytes": len(message.payload)}},
        )
        self.store.add_dead_letter(
            message.topic, message.payload, exc.message, exc.hint, now,
            keep_bytes=self.limits.dead_letter_keep_bytes, order_id=order_id, msg_id=msg_id,
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
        errors_topic = route.errors_topic if route else contract.errors_topic_named_by(message.topic)
        out = [Outgoing(errors_topic or contract.ORDERSYS_ERRORS, rejection.model_dump_json().encode())]
        if route is not None and route.kind == Kind.order:
            ack = Ack(kind="rejected", order_id=order_id, reason=exc.message, at=now)
            out.append(Outgoing(contract.ORDERSYS_ACKS, ack.model_dump_json().encode()))
        return out

    # ------------------------------------------------------------------ dispatch by kind

    def _dispatch(self, route: Route, message: Inbound, now: datetime) -> list[Outgoing]:
        limit, payload = self.limits.max_payload_bytes, message.payload
        match route.kind:
            case Kind.order:
                order = parse(Order, payload, max_bytes=limit)
                existing = self.store.get_order(order.order_id)
                courier = self.dispatch.courier(order.courier_id or (existing.courier_id if existing else None))
                outcome = lifecycle.on_order(existing, order, now, self.new_id, courier=courier)
                outcome.acks = [a.model_copy(update={"tracking_url": self._tracking_url(outcome.record, now)})
                                if a.kind == "accepted" else a for a in outcome.acks]
                if outcome.acks and outcome.acks[0].duplicate:
                    log.info("duplicate order acknowledged again", extra={"ctx": {"order_id": order.order_id}})
                out = self._apply(outcome, now)
                if existing is None and outcome.record.courier_id is None:
                    out += self.dispatch.place(outcome.record, now)
                return out
            case Kind.command:
                command = parse(ShopCommand, payload, max_bytes=limit)
                record = self._order(command.order_id, command.msg_id)
                outcome = lifecycle.on_command(record, route.shop_id, command, now, self.new_id,
                                               courier=self.dispatch.courier(command.courier_id))
                return self._apply(outcome, now)
            case Kind.open_orders:
                assert route.shop_id is not None
                return self._open_orders(route.shop_id, parse(OpenOrdersRequest, payload, max_bytes=limit), now)
            case Kind.order_state:
                record = self._order(parse(OrderStateRequest, payload, max_bytes=limit).order_id, None,
                                     shop_id=route.shop_id)
                # Not retained: a finished order's retained state was cleared, and must stay so.
                state = record.state().model_dump_json().encode()
                return [Outgoing(contract.order_state_topic(record.order_id), state)]
            case Kind.courier_orders:
                assert route.courier_id is not None
                parse(CourierOrdersRequest, payload, max_bytes=limit)
                return [self.dispatch.courier_orders(route.courier_id, now)]
            case Kind.status:
                assert route.courier_id is not None
                update = parse(StatusUpdate, payload, max_bytes=limit)
                announced = self._heard_from(route, message, now)
                record = self._order(update.order_id, update.msg_id)
                outcome = lifecycle.on_status(record, route.courier_id, update, now, self.new_id,
                                              proof=self.customers.proof(record, update))
                if outcome is None:
                    return announced
                out = announced + self._apply(outcome, now, notify=False) + self.dispatch.after_status(outcome, now)
                # the notice of a pickup says when it will arrive: made after dispatch worked out the ETA
                current = self.store.get_order(record.order_id) or outcome.record
                return out + self.customers.notify(current, outcome.happenings, now)
            case Kind.receipt:
                return self._receipt(route, message, now)
            case Kind.presence:
                assert route.courier_id is not None
                presence = parse(Presence, payload, max_bytes=limit)
                client = self._client_of(route, message)
                if client is not None:
                    return self._device(route.courier_id, client, presence.online, "presence", "connection", now)
                return self._device(route.courier_id, presence.device or PRESENCE_DEVICE, presence.online, "presence",
                                    "topic", now)
            case Kind.gps | Kind.owntracks:
                return self._location(route, message, now)
            case Kind.device:
                assert route.courier_id is not None
                event = parse(DeviceEvent, payload, max_bytes=limit)
                return self._device(route.courier_id, event.client_id, event.online, event.how, "connection", now)
            case Kind.chat | Kind.chat_read | Kind.chat_history | Kind.media | Kind.rating:
                return self.customers.handle(route, payload, now)
            case Kind.broker:
                out: list[Outgoing] = []
                for courier_id in self.store.reset_connection_devices(now):
                    out.extend(self._derive_presence(courier_id, now))
                log.info("embedded broker started: its connections of before are offline")
                return out
        raise AssertionError(f"unrouted kind {route.kind}")

    def _tracking_url(self, record: lifecycle.OrderRecord, now: datetime) -> str | None:
        """The order's tracking link: the same one each time; made when an active order has none yet."""
        nonce = self.store.tracking_nonce(record.order_id)
        if nonce is None:
            if not record.active:
                return None
            nonce = secrets.token_hex(8)
            token = tracking.token(self.key, record.order_id, nonce)
            self.store.add_tracking(record.order_id, nonce, tracking.digest(token), now)
        return tracking.url(self.public_url, tracking.token(self.key, record.order_id, nonce))

    def _order(self, order_id: str, msg_id: str | None, *, shop_id: str | None = None) -> lifecycle.OrderRecord:
        """The order, or UnknownOrder; with `shop_id`, another shop's order is unknown too (not even its existence
        is told)."""
        record = self.store.get_order(order_id)
        if record is None or (shop_id is not None and record.order.shop_id != shop_id):
            raise UnknownOrder(
                f"order {order_id} is unknown to the gateway",
                hint="Check the order_id; an order exists once the order system published it on orders/in.",
                order_id=order_id,
                msg_id=msg_id,
            )
        return record

    def _apply(self, outcome: Outcome | None, now: datetime, *, notify: bool = True) -> list[Outgoing]:
        """Write an outcome (order row, timeline, tasks) and return the messages it publishes: its own, the
        customer's notices it makes (unless `notify` is off), and the conversation so far for a newly assigned
        courier."""
        if outcome is None:
            return []
        record = outcome.record
        if outcome.state_changed:
            self.store.put_order(record)
            if record.courier_id is not None:
                self._couriers_changed.add(record.courier_id)
            self._couriers_changed.update(c for c, task in outcome.tasks if task.kind == "cancel")
        self.store.add_happenings(record.order_id, outcome.happenings, now)
        retry_at = self.clock() + self.limits.task_retry_seconds
        for courier_id, task in outcome.tasks:
            payload = task.model_dump_json().encode()
            self.store.add_task(courier_id, task.msg_id, task.order_id, task.kind, payload, now, retry_at)
        for h in outcome.happenings:
            log.info(
                "order %s", h.kind,
                extra={"ctx": {"order_id": record.order_id, "status": h.status.value, "actor": h.actor,
                               "courier_id": h.courier_id}},
            )
        out = lifecycle.messages_for(outcome)
        for courier_id, task in outcome.tasks:
            if task.kind == "assign":
                out += self.customers.history_for(courier_id, record, now)
        return out + self.customers.notify(record, outcome.happenings, now) if notify else out

    def _open_orders(self, shop_id: str, request: OpenOrdersRequest, now: datetime) -> list[Outgoing]:
        records, more = self.store.open_orders(shop_id, request.after, request.limit)
        answer = OpenOrders(shop_id=shop_id, request_id=request.request_id, orders=[r.view() for r in records],
                            more=more, at=now)
        return [Outgoing(contract.shop_topic(shop_id, "open"), answer.model_dump_json().encode())]

    # ------------------------------------------------------------------ presence, per device

    @staticmethod
    def _client_of(route: Route, message: Inbound) -> str | None:
        """The client id of the connection that sent this, if the broker authenticated it as the route's courier
        (its presence then comes from that connection); None for anonymous clients and external brokers."""
        if message.origin is None:
            return None
        client_id, identity = message.origin
        return client_id if identity.role == Role.courier and identity.id == route.courier_id else None

    def _was_online(self, courier_id: str) -> bool | None:
        if courier_id not in self._online:
            self._online[courier_id] = self.store.courier_online(courier_id)
        return self._online[courier_id]

    def _heard_from(self, route: Route, message: Inbound, now: datetime) -> list[Outgoing]:
        """The courier sent something: its last-seen time is written (at most once a second). An anonymous
        courier with no device online has evidently come back: its device (the OwnTracks topic's, else
        "presence") is marked online."""
        courier_id = route.courier_id
        assert courier_id is not None
        stamp = now.timestamp()
        if stamp - self._seen.get(courier_id, float("-inf")) >= 1.0:
            self.store.touch_courier(courier_id, now)
            self._seen[courier_id] = stamp
        if self._client_of(route, message) is not None or self._was_online(courier_id):
            return []
        return self._device(courier_id, route.device or PRESENCE_DEVICE, True, "traffic", "topic", now)

    def _device(self, courier_id: str, device: str, online: bool, how: str, source: str,
                now: datetime) -> list[Outgoing]:
        """One of a courier's devices came or went; the courier's presence follows."""
        self.store.set_device(courier_id, device, online, how, source, now)
        log.info("courier device %s", "online" if online else "offline",
                 extra={"ctx": {"courier_id": courier_id, "device": device, "how": how}})
        return self._derive_presence(courier_id, now)

    def _derive_presence(self, courier_id: str, now: datetime) -> list[Outgoing]:
        """A courier is online while any of its devices is; a change is announced to its active orders' shops
        (but not a first appearance: there was no absence to end)."""
        online = self.store.any_device_online(courier_id)
        was = self._was_online(courier_id)
        if was is online:
            return []
        self.store.set_courier_online(courier_id, online, now)
        self._online[courier_id] = online
        log.info("courier presence", extra={"ctx": {"courier_id": courier_id, "online": online}})
        out = self._announce(courier_id, online, now) if was is not None or not online else []
        return out + self.dispatch.offer_waiting(courier_id, now) if online else out

    def _announce(self, courier_id: str, online: bool, now: datetime) -> list[Outgoing]:
        """Tell the shop of each active order of this courier (timeline + OrderEvent) that it went on/offline."""
        kind = "courier_online" if online else "courier_offline"
        out: list[Outgoing] = []
        for record in self.store.active_orders_of(courier_id):
            happening = lifecycle.Happening(kind, record.status, f"courier:{courier_id}", courier_id=courier_id)
            out.extend(self._apply(Outcome(record=record, happenings=[happening], state_changed=False), now))
        return out

    # ------------------------------------------------------------------ receipts and fixes

    def _receipt(self, route: Route, message: Inbound, now: datetime) -> list[Outgoing]:
        """Mark tasks received; msg_ids the courier never got are refused, the others still count."""
        assert route.courier_id is not None
        receipt = parse(Receipt, message.payload, max_bytes=self.limits.max_payload_bytes)
        out = self._heard_from(route, message, now)
        changes, unknown = self.store.receive_tasks(route.courier_id, receipt.msg_ids, receipt.read, now)
        for change in changes:
            record = self.store.get_order(change.order_id)
            assert record is not None
            if change.kind == "delivered_to_courier":
                metrics.TASK_RECEIPT.observe(max(0.0, change.waited))
            outcome = lifecycle.on_task_received(record, route.courier_id, change.msg_id, change.kind, now)
            out.extend(self._apply(outcome, now))
        if receipt.confirm:
            for msg_id in receipt.msg_ids:
                record = self.store.order_of_task(route.courier_id, msg_id)
                if record is not None and record.dispatch.change_msg_id == msg_id:
                    outcome = lifecycle.on_task_received(record, route.courier_id, msg_id, "change_confirmed", now)
                    out.extend(self._apply(outcome, now))
        read = [change.msg_id for change in changes if change.kind == "read_by_courier"]
        if read:  # the courier's other devices follow
            sync = Sync(read=read, at=now).model_dump_json().encode()
            out.append(Outgoing(contract.courier_topic(route.courier_id, "sync"), sync))
        if unknown:
            exc = Rejected(
                f"courier {route.courier_id} has no task with msg_id {', '.join(unknown)}",
                hint="Send receipts for msg_ids of tasks received on your own couriers/<id>/tasks topic.",
                msg_id=unknown[0],
            )
            out.extend(self._reject(route, message, exc, now))
        return out

    def _location(self, route: Route, message: Inbound, now: datetime) -> list[Outgoing]:
        courier_id = route.courier_id
        assert courier_id is not None
        if route.kind == Kind.owntracks:
            kind = _guess(message.payload, "_type")
            if kind == "lwt":
                client = self._client_of(route, message)
                device, source = (client, "connection") if client else (route.device or PRESENCE_DEVICE, "topic")
                return self._device(courier_id, device, False, "lwt", source, now)
            if kind in OWNTRACKS_IGNORED:
                return []
        loc = parse(Location, message.payload, max_bytes=self.limits.max_payload_bytes)
        return self._heard_from(route, message, now) + self._fix(courier_id, route.device or "gps", loc, now)

    def _fix(self, courier_id: str, device: str, loc: Location, now: datetime) -> list[Outgoing]:
        """Keep a fix, stored at the transaction's end with the others; if it is the courier's newest, it becomes
        its location then (`_moves`: retained, and copied into its active orders' state).

        A fix more than gps.max_future_seconds ahead of the gateway's clock is refused (it would otherwise
        freeze the courier's location); one older than gps.max_age_seconds is kept in history only."""
        gps, stamp = self.settings.gps, now.timestamp()
        if loc.tst > stamp + gps.max_future_seconds:
            raise PayloadError(
                f"fix tst {loc.tst} is {int(loc.tst - stamp)} s ahead of the gateway's clock "
                f"(more than gps.max_future_seconds, {gps.max_future_seconds})",
                hint="Check the phone's clock: tst is the fix's time in UTC epoch seconds.",
            )
        fix = Fix.model_construct(lat=loc.lat, lon=loc.lon, tst=loc.tst, acc=loc.acc, vel=loc.vel, cog=loc.cog,
                                  batt=loc.batt)  # Location validated these
        self._fixes.append((courier_id, device, loc, now))
        if loc.tst < stamp - gps.max_age_seconds:
            return []
        moved = self._moved.get(courier_id)
        if courier_id not in self._newest:
            self._newest[courier_id] = moved[0][-1] if moved is not None else self.store.courier_fix(courier_id)
        newest = self._newest[courier_id]
        # A newest fix from the future (stored before the gateway refused such fixes) does not hold the courier.
        if newest is not None and newest.tst <= stamp + gps.max_future_seconds and fix.tst <= newest.tst:
            return []
        self._newest[courier_id] = fix
        self._moved[courier_id] = ([fix], newest) if moved is None else ([*moved[0], fix], moved[1])
        return []

    def _moves(self, now: datetime) -> list[Outgoing]:
        """Each courier that moved in this transaction, once: its retained location (its newest fix), its speed, and
        its active orders' distance, ETA, geofence and lateness (`Dispatcher.fix`). Under load a batch holds several
        fixes of a courier (and a phone back in coverage sends what it stored): only the newest is its location,
        but the speed and the orders learn from each in turn. A failure is logged, not the batch's."""
        out: list[Outgoing] = []
        moved, self._moved = self._moved, {}
        for courier_id, (path, previous) in moved.items():
            fix = path[-1]
            try:
                with self.store.savepoint():
                    located = CourierLocation(courier_id=courier_id, **fix.model_dump())
                    out += [Outgoing(contract.courier_topic(courier_id, "location"),
                                     located.model_dump_json().encode(), True),
                            *self.dispatch.fix(courier_id, path, previous, now)]
            except StoreBusy:
                raise
            except Exception:
                self._forget_couriers()
                log.exception("internal error while applying a courier's newest fix",
                              extra={"ctx": {"courier_id": courier_id, "tst": fix.tst}})
        return out

    # ------------------------------------------------------------------ housekeeping, between batches

    def due_resends(self) -> list[Outgoing]:
        """Tasks with no receipt after task_retry_seconds, for couriers online now; reschedules them."""
        now = self.clock()
        with self.store.transaction():
            due = self.store.due_tasks(now)
            for task in due:
                self.store.reschedule_task(task.msg_id, now + self.limits.task_retry_seconds)
        for task in due:
            log.info(
                "task re-sent", extra={"ctx": {"msg_id": task.msg_id, "courier_id": task.courier_id,
                                               "order_id": task.order_id, "attempt": task.attempts + 1}},
            )
        return [Outgoing(contract.courier_topic(t.courier_id, "tasks"), t.payload) for t in due]

    def record_webhook(self, delivery: Delivery, verdict: Verdict, status: int | None, error: str | None) -> None:
        """The outcome of one webhook delivery attempt (the HTTP side's sender), committed."""
        with self.store.transaction():
            self.store.record_delivery(delivery, verdict, self.now(), status, error)

    def run_operator_commands(self) -> list[tuple[int, Outgoing]]:
        """Commands the CLI left in the `commands` table, handled exactly as if published on operator/commands;
        each row gets its result (done, unchanged or rejected) in the same transaction."""

        def work() -> list[Outgoing]:
            out: list[Outgoing] = []
            for command_id, payload in self.store.pending_commands():
                messages, refused = self._handle_one(Inbound(contract.OPERATOR_COMMANDS, payload))
                now = self.now()
                if refused is not None:
                    self.store.finish_command(command_id, "rejected", now, refused.message, refused.hint)
                else:
                    self.store.finish_command(command_id, "done" if messages else "unchanged", now)
                out.extend(messages)
            return out

        return self._in_transaction(work)

    def run_timers(self) -> list[tuple[int, Outgoing]]:
        """Dispatch's timers (accept timeouts, waiting orders, unconfirmed changes) and the notices whose quiet hours
        have ended, in one transaction."""
        return self._in_transaction(lambda: self.dispatch.tick(self.now()) + self.customers.due(self.now()))

    def clear_final_states(self) -> list[tuple[int, Outgoing]]:
        """Clear the retained state (an empty retained payload) of orders final for longer than
        bridge.retain_final_seconds, so new subscribers do not receive every order ever finished."""

        def work() -> list[Outgoing]:
            ended = self.store.final_states_to_clear(self.now() - timedelta(seconds=self.limits.retain_final_seconds))
            self.store.mark_states_cleared(ended)
            if ended:
                log.info("cleared the retained state of finished orders", extra={"ctx": {"orders": len(ended)}})
            return [Outgoing(contract.order_state_topic(order_id), b"", True) for order_id in ended]

        return self._in_transaction(work)


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
    if route.kind == Kind.command:
        return "operator"
    return "ordersys"
