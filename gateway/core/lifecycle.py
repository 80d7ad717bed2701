"""The order lifecycle: pure decisions, no broker and no database.

Each `on_*` function takes what the store knows (an `OrderRecord`), one validated inbound
payload and the time, and returns an `Outcome`: the new record, the timeline entries, the
tasks for couriers and the acks for the order system. It returns None when the message
changes nothing (a QoS-1 duplicate; a repeated order is answered with a duplicate Ack instead)
and raises a `Rejected` subclass when it must be refused.
`gateway.bridge.service` applies outcomes to the store; `messages_for` turns them into MQTT payloads.

Status rules: forward moves may skip steps (created → picked_up is fine); backward moves are
refused; delivered, failed and cancelled are final; exception may be entered from any
non-final status and left for the status it interrupted, any later one, or a final one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from gateway.core import contract
from gateway.core.models import (
    Ack,
    Fix,
    Order,
    OrderEvent,
    OrderState,
    OrderView,
    ShopCommand,
    Status,
    StatusUpdate,
    Task,
)
from gateway.errors import IllegalTransition, NotYours

FINAL = frozenset({Status.delivered, Status.failed, Status.cancelled})
_RANK = {
    Status.created: 0,
    Status.assigned: 1,
    Status.packed: 2,
    Status.picked_up: 3,
    Status.en_route: 4,
    Status.arriving: 5,
    Status.delivered: 6,
}

NewId = Callable[[], str]


@dataclass(frozen=True)
class OrderRecord:
    """An order as stored: the order system's payload plus what happened to it since."""

    order: Order
    status: Status
    progress: Status  # the last status that was not `exception`
    courier_id: str | None
    location: Fix | None
    created_at: datetime
    updated_at: datetime

    @property
    def order_id(self) -> str:
        return self.order.order_id

    @property
    def active(self) -> bool:
        return self.status not in FINAL

    def view(self) -> OrderView:
        return OrderView(
            **self.order.model_dump(exclude={"courier_id"}),
            courier_id=self.courier_id,
            status=self.status,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )

    def state(self) -> OrderState:
        return OrderState(
            order_id=self.order_id,
            shop_id=self.order.shop_id,
            status=self.status,
            courier_id=self.courier_id,
            location=self.location,
            updated_at=self.updated_at,
        )


@dataclass(frozen=True)
class Happening:
    """One entry of an order's timeline; the shop terminal sees each as an OrderEvent."""

    kind: str
    status: Status
    actor: str
    courier_id: str | None = None
    reason: str | None = None
    courier_known: bool | None = None  # for `assigned`: has the gateway ever known this courier?


@dataclass
class Outcome:
    """What one inbound message does to one order."""

    record: OrderRecord
    happenings: list[Happening] = field(default_factory=list)
    tasks: list[tuple[str, Task]] = field(default_factory=list)  # (courier_id, task)
    acks: list[Ack] = field(default_factory=list)
    state_changed: bool = True


def next_status(record: OrderRecord, new: Status) -> Status | None:
    """The status after `new` is applied, None if it is already there; raises IllegalTransition."""
    current = record.status
    if new == current:
        return None
    if current in FINAL:
        raise IllegalTransition(
            f"order {record.order_id} is already {current}; it cannot become {new}",
            hint=f"{', '.join(sorted(FINAL))} are final.",
            order_id=record.order_id,
        )
    if new == Status.exception or new in FINAL:
        return new
    base = record.progress if current == Status.exception else current
    if _RANK[new] > _RANK[base] or (current == Status.exception and _RANK[new] == _RANK[base]):
        return new
    raise IllegalTransition(
        f"order {record.order_id} cannot go back from {current} to {new}",
        hint="Statuses only move forward: created, assigned, packed, picked_up, en_route, arriving, delivered.",
        order_id=record.order_id,
    )


def _with_status(record: OrderRecord, status: Status, now: datetime) -> OrderRecord:
    progress = record.progress if status == Status.exception else status
    return replace(record, status=status, progress=progress, updated_at=now)


def _task(kind: str, record: OrderRecord, now: datetime, new_id: NewId, reason: str | None = None) -> Task:
    """A task for the order's courier. A cancel carries only what the phone needs to drop the job: no
    recipient, no address, no word of who takes over."""
    order = None if kind == "cancel" else record.view()
    return Task(msg_id=new_id(), kind=kind, order_id=record.order_id, order=order, reason=reason, at=now)


def _reassign(
    record: OrderRecord, courier_id: str, actor: str, now: datetime, new_id: NewId, courier_known: bool | None
) -> Outcome:
    """Give the order to `courier_id`: cancel the old courier's task, send the new one an assign, tell the
    shop (OrderEvent `assigned`) and the order system (Ack `assigned`)."""
    base = record.progress if record.status == Status.exception else record.status
    if record.courier_id is not None and _RANK[base] >= _RANK[Status.picked_up]:
        raise IllegalTransition(
            f"order {record.order_id} was already {base} by courier {record.courier_id}; "
            f"it cannot be reassigned to {courier_id}",
            hint="Cancel the order and create a new one if the goods must change hands.",
            order_id=record.order_id,
        )
    old = record.courier_id
    status = Status.assigned if record.status == Status.created else record.status
    updated = replace(_with_status(record, status, now), courier_id=courier_id)
    outcome = Outcome(record=updated)
    if old is not None:
        outcome.tasks.append((old, _task("cancel", updated, now, new_id, reason="reassigned")))
        outcome.happenings.append(Happening("unassigned", updated.status, actor, courier_id=old))
    outcome.happenings.append(Happening("assigned", updated.status, actor, courier_id=courier_id,
                                        courier_known=courier_known))
    outcome.tasks.append((courier_id, _task("assign", updated, now, new_id)))
    outcome.acks.append(Ack(kind="assigned", order_id=record.order_id, status=updated.status, courier_id=courier_id,
                            courier_known=courier_known, at=now))
    return outcome


def _accepted(record: OrderRecord, now: datetime, *, duplicate: bool = False,
              courier_known: bool | None = None) -> Ack:
    return Ack(kind="accepted", order_id=record.order_id, status=record.status, courier_id=record.courier_id,
               duplicate=duplicate, courier_known=courier_known, at=now)


def on_order(
    existing: OrderRecord | None, order: Order, now: datetime, new_id: NewId, *, courier_known: bool | None = None
) -> Outcome:
    """An Order on orders/in: create it, or update it. An exact repeat (an order system retrying after a lost
    ack) changes nothing and is answered with the same `accepted` Ack, marked duplicate.

    `courier_known` says whether the gateway has ever known the order's `courier_id` (None: no courier named)."""
    if existing is None:
        record = OrderRecord(
            order=order,
            status=Status.created,
            progress=Status.created,
            courier_id=None,
            location=None,
            created_at=now,
            updated_at=now,
        )
        if order.courier_id is None:
            outcome = Outcome(record=record)
        else:
            outcome = _reassign(record, order.courier_id, "ordersys", now, new_id, courier_known)
        outcome.happenings.insert(0, Happening("created", Status.created, "ordersys"))
        outcome.acks.insert(0, _accepted(outcome.record, now, courier_known=courier_known))
        return outcome

    keeps_courier = order.courier_id in (None, existing.courier_id)
    same_content = order.model_dump(exclude={"courier_id"}) == existing.order.model_dump(
        exclude={"courier_id"}
    )
    if keeps_courier and same_content:
        return Outcome(record=existing, state_changed=False,
                       acks=[_accepted(existing, now, duplicate=True,
                                       courier_known=courier_known if existing.courier_id else None)])
    if not existing.active:
        raise IllegalTransition(
            f"order {order.order_id} is already {existing.status}; it can no longer be updated",
            order_id=order.order_id,
        )
    if order.shop_id != existing.order.shop_id:
        raise NotYours(
            f"order {order.order_id} belongs to shop {existing.order.shop_id}, not {order.shop_id}",
            hint="An order cannot move between shops; create a new order_id.",
            order_id=order.order_id,
        )
    record = replace(existing, order=order, updated_at=now)
    if keeps_courier:
        outcome = Outcome(record=record)
        if record.courier_id is not None:
            outcome.tasks.append((record.courier_id, _task("update", record, now, new_id)))
    else:
        assert order.courier_id is not None
        outcome = _reassign(record, order.courier_id, "ordersys", now, new_id, courier_known)
    outcome.happenings.insert(0, Happening("updated", outcome.record.status, "ordersys"))
    outcome.acks.insert(0, _accepted(outcome.record, now, courier_known=courier_known))
    return outcome


def _status_change(
    record: OrderRecord, new: Status, actor: str, now: datetime, reason: str | None
) -> Outcome | None:
    status = next_status(record, new)
    if status is None:
        return None
    updated = _with_status(record, status, now)
    return Outcome(
        record=updated,
        happenings=[Happening("status", status, actor, courier_id=updated.courier_id, reason=reason)],
        acks=[
            Ack(
                kind="status_changed",
                order_id=record.order_id,
                status=status,
                courier_id=updated.courier_id,
                reason=reason,
                at=now,
            )
        ],
    )


def on_status(record: OrderRecord, courier_id: str, update: StatusUpdate, now: datetime) -> Outcome | None:
    """A courier's StatusUpdate; only the assigned courier may move the order."""
    if record.courier_id != courier_id:
        owner = f"courier {record.courier_id}" if record.courier_id else "no courier"
        raise NotYours(
            f"order {record.order_id} is assigned to {owner}, not {courier_id}",
            hint="Only the assigned courier may report its status.",
            order_id=record.order_id,
            msg_id=update.msg_id,
        )
    outcome = _status_change(record, Status(update.status), f"courier:{courier_id}", now, update.reason)
    if outcome is not None and update.lat is not None and update.lon is not None:
        tst = int((update.at or now).timestamp())
        if record.location is None or tst >= record.location.tst:
            outcome.record = replace(outcome.record, location=Fix(lat=update.lat, lon=update.lon, tst=tst))
    return outcome


def on_command(
    record: OrderRecord, shop_id: str | None, command: ShopCommand, now: datetime, new_id: NewId, *,
    courier_known: bool | None = None,
) -> Outcome | None:
    """A ShopCommand: from a shop terminal on one of its own orders, or (shop_id None) from an operator on any.
    `courier_known` is for assign: has the gateway ever known that courier?"""
    if shop_id is not None and record.order.shop_id != shop_id:
        raise NotYours(
            f"order {record.order_id} belongs to shop {record.order.shop_id}, not {shop_id}",
            order_id=record.order_id,
            msg_id=command.msg_id,
        )
    actor = "operator" if shop_id is None else f"shop:{shop_id}"
    if command.command == "assign":
        assert command.courier_id is not None
        if not record.active:
            next_status(record, Status.assigned)  # raises: final orders are not reassigned
        if command.courier_id == record.courier_id:
            return None
        return _reassign(record, command.courier_id, actor, now, new_id, courier_known)
    new = Status.packed if command.command == "packed" else Status.cancelled
    outcome = _status_change(record, new, actor, now, command.reason)
    if outcome is not None and outcome.record.courier_id is not None:
        kind = "ready_for_pickup" if new == Status.packed else "cancel"
        outcome.tasks.append((outcome.record.courier_id, _task(kind, outcome.record, now, new_id, command.reason)))
    return outcome


def on_task_received(record: OrderRecord, courier_id: str, msg_id: str, read: bool, now: datetime) -> Outcome:
    """A courier's Receipt named one of its tasks for this order."""
    kind = "read_by_courier" if read else "delivered_to_courier"
    return Outcome(
        record=record,
        happenings=[Happening(kind, record.status, f"courier:{courier_id}", courier_id=courier_id)],
        acks=[
            Ack(kind=kind, order_id=record.order_id, status=record.status, courier_id=courier_id, msg_id=msg_id,
                at=now)
        ],
        state_changed=False,
    )


def on_fix(record: OrderRecord, fix: Fix, now: datetime) -> Outcome | None:
    """The assigned courier's newest GPS fix; copied into the order's state if newer than what it has."""
    if record.location is not None and fix.tst <= record.location.tst:
        return None
    return Outcome(record=replace(record, location=fix, updated_at=now))


@dataclass(frozen=True)
class Outgoing:
    """One MQTT message the gateway will publish (QoS 1)."""

    topic: str
    payload: bytes
    retain: bool = False


def messages_for(outcome: Outcome) -> list[Outgoing]:
    """The MQTT messages an outcome produces, in the order they must be published."""
    record = outcome.record
    view = record.view()
    out: list[Outgoing] = []
    for h in outcome.happenings:
        event = OrderEvent(
            kind=h.kind,
            order_id=record.order_id,
            status=h.status,
            courier_id=h.courier_id,
            reason=h.reason,
            courier_known=h.courier_known,
            order=view,
            at=record.updated_at,
        )
        out.append(Outgoing(contract.shop_topic(record.order.shop_id, "orders"), event.model_dump_json().encode()))
    for courier_id, task in outcome.tasks:
        out.append(Outgoing(contract.courier_topic(courier_id, "tasks"), task.model_dump_json().encode()))
    if outcome.state_changed:
        out.append(
            Outgoing(contract.order_state_topic(record.order_id), record.state().model_dump_json().encode(), True)
        )
    out.extend(Outgoing(contract.ORDERSYS_ACKS, ack.model_dump_json().encode()) for ack in outcome.acks)
    return out
