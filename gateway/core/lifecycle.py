"""The order lifecycle: pure decisions, no broker and no database.

Each function takes what the store knows (an `OrderRecord`), one validated input and the time,
and returns an `Outcome`: the new record, the timeline entries (each one an OrderEvent for the
shop), the tasks for couriers and the acks for the order system. It returns None when the input
changes nothing (a QoS-1 duplicate; a repeated order is answered with a duplicate Ack instead)
and raises a `Rejected` subclass when it must be refused. `gateway.bridge.service` applies
outcomes to the store; `messages_for` turns them into MQTT payloads.

Status rules: forward moves may skip steps (created → picked_up is fine); backward moves are
refused; delivered, failed and cancelled are final; exception may be entered from any
non-final status and left for the status it interrupted, any later one, or a final one.

Who has the order: an order can be (re)assigned until it is picked up, and after an exception
even later (the goods change hands: it returns to `assigned` for the new courier). A courier may
refuse it before pickup (it goes back to waiting). Every assignment is an `assigned` event, an
`assign` task and an `assigned` ack; the old courier gets a `cancel` task that carries no customer
data.

Where the courier is: `track` turns the courier's newest fix into the order's distance, ETA
(`gateway.core.eta`), the `arriving` geofence (once, actor `geofence`) and the lateness warning
(`late_risk` + Ack `delayed`, again only when the ETA worsens by more than a step).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from gateway.core import contract, eta
from gateway.core.geo import haversine_m
from gateway.core.models import (
    Ack,
    Change,
    Fix,
    Order,
    OrderEvent,
    OrderState,
    OrderView,
    ReasonCode,
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
#: The fields of an order a courier is told about, and must confirm, when they change.
CHANGE_FIELDS: tuple[str, ...] = ("recipient", "address", "items", "window", "notes", "priority")

NewId = Callable[[], str]


@dataclass(frozen=True)
class CourierRef:
    """A courier as an assignment needs it: who, its name and phone if registered, whether ever known."""

    courier_id: str
    name: str | None = None
    phone: str | None = None
    known: bool | None = None


@dataclass(frozen=True)
class Tracking:
    """Where the order's courier is, relative to the order's address."""

    distance_m: float | None = None
    eta_seconds: int | None = None
    eta_at: datetime | None = None
    detour: float | None = None  # learned from the courier's track toward this address
    arrived: bool = False  # the arriving geofence fired (or the courier said arriving): never again
    late_eta_at: datetime | None = None  # the ETA last reported as late


@dataclass(frozen=True)
class Dispatch:
    """Who should have the order, and what is pending about it."""

    auto: bool = False  # the gateway chose the current courier
    assigned_at: datetime | None = None
    refused_by: tuple[str, ...] = ()  # couriers that refused it or let it time out: never offered again
    waiting_since: datetime | None = None  # looking for a courier (or one to take over) since
    waiting_announced: bool = False  # the shop got waiting_for_courier
    alerted: bool = False  # the shop got the alert for waiting too long
    takeover_from: str | None = None  # a broken-down courier whose order the gateway hands to another
    change_msg_id: str | None = None  # the update task the courier has not confirmed yet
    change_since: datetime | None = None
    change_alerted: bool = False


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
    tracking: Tracking = Tracking()
    dispatch: Dispatch = Dispatch()
    courier_name: str | None = None

    @property
    def order_id(self) -> str:
        return self.order.order_id

    @property
    def active(self) -> bool:
        return self.status not in FINAL

    @property
    def picked_up(self) -> bool:
        base = self.progress if self.status == Status.exception else self.status
        return _RANK.get(base, 0) >= _RANK[Status.picked_up]

    def view(self) -> OrderView:
        return OrderView(
            **self.order.model_dump(exclude={"courier_id"}),
            courier_id=self.courier_id,
            courier_name=self.courier_name,
            status=self.status,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )

    def state(self) -> OrderState:
        t = self.tracking
        return OrderState(
            order_id=self.order_id,
            shop_id=self.order.shop_id,
            status=self.status,
            courier_id=self.courier_id,
            courier_name=self.courier_name,
            location=self.location,
            distance_m=None if t.distance_m is None else round(t.distance_m),
            eta_seconds=t.eta_seconds,
            eta_at=t.eta_at,
            unconfirmed_change=self.dispatch.change_msg_id is not None,
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
    courier_known: bool | None = None  # assigned: has the gateway ever known this courier?
    courier_name: str | None = None
    courier_phone: str | None = None  # assigned: for the shop's eyes only
    auto: bool = False  # assigned: the gateway chose
    reason_code: ReasonCode | None = None
    eta_at: datetime | None = None
    media_id: str | None = None  # media: the upload; delivered: its proof
    stars: int | None = None  # rated


@dataclass
class Outcome:
    """What one input does to one order."""

    record: OrderRecord
    happenings: list[Happening] = field(default_factory=list)
    tasks: list[tuple[str, Task]] = field(default_factory=list)  # (courier_id, task)
    acks: list[Ack] = field(default_factory=list)
    state_changed: bool = True

    def then(self, more: Outcome | None) -> Outcome:
        """This outcome followed by `more` (which started from this one's record)."""
        if more is None:
            return self
        return Outcome(record=more.record, happenings=self.happenings + more.happenings,
                       tasks=self.tasks + more.tasks, acks=self.acks + more.acks,
                       state_changed=self.state_changed or more.state_changed)


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
    tracking = record.tracking
    if status == Status.arriving:
        tracking = replace(tracking, arrived=True)
    return replace(record, status=status, progress=progress, tracking=tracking, updated_at=now)


def _task(kind: str, record: OrderRecord, now: datetime, new_id: NewId, reason: str | None = None,
          changes: list[Change] | None = None) -> Task:
    """A task for the order's courier. A cancel carries only what the phone needs to drop the job: no
    recipient, no address, no word of who takes over."""
    order = None if kind == "cancel" else record.view()
    return Task(msg_id=new_id(), kind=kind, order_id=record.order_id, order=order, reason=reason,
                changes=changes or [], confirm_required=bool(changes), at=now)


def _cancel_old(record: OrderRecord, old: str, actor: str, reason: str, now: datetime,
                new_id: NewId) -> tuple[tuple[str, Task], Happening]:
    return ((old, _task("cancel", record, now, new_id, reason=reason)),
            Happening("unassigned", record.status, actor, courier_id=old, reason=reason))


def assign(record: OrderRecord, courier: CourierRef, actor: str, now: datetime, new_id: NewId, *,
           auto: bool = False) -> Outcome:
    """Give the order to `courier`: the old courier (if any) gets a cancel task, the new one an assign task, the
    shop an `assigned` event (with the courier's name and phone) and the order system an `assigned` ack.

    Allowed until pickup, and after an exception at any time: the goods change hands and the order returns
    to `assigned` for the new courier."""
    if not record.active:
        next_status(record, Status.assigned)  # raises: final orders are not reassigned
    handover = record.status == Status.exception and record.picked_up
    if record.courier_id is not None and record.picked_up and not handover:
        raise IllegalTransition(
            f"order {record.order_id} was already {record.status} by courier {record.courier_id}; "
            f"it cannot be reassigned to {courier.courier_id}",
            hint="After pickup, an order changes courier only after an exception (the courier reports one).",
            order_id=record.order_id,
        )
    old = record.courier_id
    if handover:  # the goods change hands: the new courier picks them up from the old one
        status = progress = Status.assigned
    else:  # before pickup the order resumes where it was (an exception before pickup ends here too)
        progress = Status.assigned if record.progress == Status.created else record.progress
        status = progress if record.status in (Status.created, Status.exception) else record.status
    updated = replace(
        record, status=status, progress=progress, courier_id=courier.courier_id, courier_name=courier.name,
        updated_at=now, tracking=Tracking(distance_m=None) if old != courier.courier_id else record.tracking,
        dispatch=replace(record.dispatch, auto=auto, assigned_at=now, waiting_since=None, waiting_announced=False,
                         alerted=False, takeover_from=None, change_msg_id=None, change_since=None,
                         change_alerted=False),
    )
    outcome = Outcome(record=updated)
    if old is not None:
        task, happening = _cancel_old(updated, old, actor, "reassigned", now, new_id)
        outcome.tasks.append(task)
        outcome.happenings.append(happening)
    outcome.happenings.append(Happening("assigned", updated.status, actor, courier_id=courier.courier_id,
                                        courier_known=courier.known, courier_name=courier.name,
                                        courier_phone=courier.phone, auto=auto))
    outcome.tasks.append((courier.courier_id, _task("assign", updated, now, new_id)))
    outcome.acks.append(Ack(kind="assigned", order_id=record.order_id, status=updated.status,
                            courier_id=courier.courier_id, courier_known=courier.known, auto=auto, at=now))
    return outcome


def _accepted(record: OrderRecord, now: datetime, *, duplicate: bool = False,
              courier_known: bool | None = None) -> Ack:
    return Ack(kind="accepted", order_id=record.order_id, status=record.status, courier_id=record.courier_id,
               duplicate=duplicate, courier_known=courier_known, at=now)


def changes_between(old: Order, new: Order) -> list[Change]:
    """The fields a courier must hear about, with their old and new values."""
    before, after = old.model_dump(mode="json"), new.model_dump(mode="json")
    return [Change(field=name, old=before[name], new=after[name]) for name in CHANGE_FIELDS
            if before[name] != after[name]]


def on_order(
    existing: OrderRecord | None, order: Order, now: datetime, new_id: NewId, *, courier: CourierRef | None = None,
) -> Outcome:
    """An Order on orders/in: create it, or update it. An exact repeat (an order system retrying after a lost
    ack) changes nothing and is answered with the same `accepted` Ack, marked duplicate.

    `courier` is the order's named courier (or the current one, for a repeat), as the registry knows it.
    A new order without a courier waits (`waiting_since`) for the shop's rule to find one. An update of an
    assigned order sends its courier an `update` task listing the changes, which it must confirm."""
    known = None if courier is None else courier.known
    if existing is None:
        record = OrderRecord(order=order, status=Status.created, progress=Status.created, courier_id=None,
                             location=None, created_at=now, updated_at=now)
        if courier is None:
            outcome = Outcome(record=replace(record, dispatch=Dispatch(waiting_since=now)))
        else:
            outcome = assign(record, courier, "ordersys", now, new_id)
        outcome.happenings.insert(0, Happening("created", Status.created, "ordersys"))
        outcome.acks.insert(0, _accepted(outcome.record, now, courier_known=known))
        return outcome

    keeps_courier = order.courier_id in (None, existing.courier_id)
    same_content = order.model_dump(exclude={"courier_id"}) == existing.order.model_dump(exclude={"courier_id"})
    if keeps_courier and same_content:
        return Outcome(record=existing, state_changed=False,
                       acks=[_accepted(existing, now, duplicate=True, courier_known=known)])
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
    changes = changes_between(existing.order, order)
    record = replace(existing, order=order, updated_at=now)
    if keeps_courier:
        outcome = Outcome(record=record)
        if record.courier_id is not None and changes:
            task = _task("update", record, now, new_id, changes=changes)
            outcome.record = replace(record, dispatch=replace(record.dispatch, change_msg_id=task.msg_id,
                                                              change_since=now, change_alerted=False))
            outcome.tasks.append((record.courier_id, task))
            outcome.happenings.append(Happening("change_pending", record.status, "ordersys",
                                                courier_id=record.courier_id,
                                                reason=", ".join(c.field for c in changes)))
    else:
        assert courier is not None
        outcome = assign(record, courier, "ordersys", now, new_id)
    outcome.happenings.insert(0, Happening("updated", outcome.record.status, "ordersys"))
    outcome.acks.insert(0, _accepted(outcome.record, now, courier_known=known))
    return outcome


def _status_change(
    record: OrderRecord, new: Status, actor: str, now: datetime, reason: str | None,
    reason_code: ReasonCode | None = None,
) -> Outcome | None:
    status = next_status(record, new)
    if status is None:
        return None
    updated = _with_status(record, status, now)
    kind = "exception" if status == Status.exception else "status"
    return Outcome(
        record=updated,
        happenings=[Happening(kind, status, actor, courier_id=updated.courier_id, reason=reason,
                              reason_code=reason_code, courier_name=updated.courier_name)],
        acks=[Ack(kind="status_changed", order_id=record.order_id, status=status, courier_id=updated.courier_id,
                  reason=reason, reason_code=reason_code, at=now)],
    )


def _only_its_courier(record: OrderRecord, courier_id: str, msg_id: str | None) -> None:
    if record.courier_id != courier_id:
        owner = f"courier {record.courier_id}" if record.courier_id else "no courier"
        raise NotYours(
            f"order {record.order_id} is assigned to {owner}, not {courier_id}",
            hint="Only the assigned courier may report its status.",
            order_id=record.order_id,
            msg_id=msg_id,
        )


def on_status(record: OrderRecord, courier_id: str, update: StatusUpdate, now: datetime, new_id: NewId, *,
              proof: str | None = None) -> Outcome | None:
    """A courier's StatusUpdate; only the assigned courier may move the order. `rejected` refuses it. `proof` is
    the proof-of-delivery photo of a `delivered` (named by the update, or the latest uploaded)."""
    _only_its_courier(record, courier_id, update.msg_id)
    if update.status == "rejected":
        return refuse(record, courier_id, update.reason or "refused by the courier", now, new_id)
    code = (update.reason_code or "other") if update.status == "exception" else None
    outcome = _status_change(record, Status(update.status), f"courier:{courier_id}", now, update.reason, code)
    if outcome is not None and proof is not None:
        outcome.happenings = [replace(h, media_id=proof) for h in outcome.happenings]
        outcome.acks = [a.model_copy(update={"media_id": proof}) for a in outcome.acks]
    if outcome is not None and update.lat is not None and update.lon is not None:
        tst = int((update.at or now).timestamp())
        if record.location is None or tst >= record.location.tst:
            outcome.record = replace(outcome.record, location=Fix(lat=update.lat, lon=update.lon, tst=tst))
    return outcome


def refuse(record: OrderRecord, courier_id: str, reason: str, now: datetime, new_id: NewId, *,
           actor: str | None = None) -> Outcome:
    """The courier refuses the order (or let its task time out): it goes back to waiting for a courier, never
    to be offered to this one again; the shop hears `rejected_by_courier`, the order system `unassigned`."""
    if record.picked_up:
        raise IllegalTransition(
            f"order {record.order_id} is already {record.status}; a courier can refuse it only before pickup",
            hint="After pickup report an exception (status exception with a reason_code) instead.",
            order_id=record.order_id,
        )
    status = Status.created if record.status == Status.assigned else record.status
    progress = Status.created if record.progress == Status.assigned else record.progress
    updated = replace(record, status=status, progress=progress, courier_id=None, courier_name=None,
                      tracking=Tracking(), updated_at=now,
                      dispatch=Dispatch(refused_by=(*record.dispatch.refused_by, courier_id), waiting_since=now))
    who = actor or f"courier:{courier_id}"
    outcome = Outcome(record=updated)
    outcome.tasks.append((courier_id, _task("cancel", updated, now, new_id, reason="refused")))
    outcome.happenings.append(Happening("rejected_by_courier", status, who, courier_id=courier_id, reason=reason))
    outcome.acks.append(Ack(kind="unassigned", order_id=record.order_id, status=status, courier_id=courier_id,
                            reason=reason, at=now))
    return outcome


def on_command(
    record: OrderRecord, shop_id: str | None, command: ShopCommand, now: datetime, new_id: NewId, *,
    courier: CourierRef | None = None,
) -> Outcome | None:
    """A ShopCommand: from a shop terminal on one of its own orders, or (shop_id None) from an operator on any.
    `courier` is the courier of an assign, as the registry knows it."""
    if shop_id is not None and record.order.shop_id != shop_id:
        raise NotYours(
            f"order {record.order_id} belongs to shop {record.order.shop_id}, not {shop_id}",
            order_id=record.order_id,
            msg_id=command.msg_id,
        )
    actor = "operator" if shop_id is None else f"shop:{shop_id}"
    if command.command == "assign":
        assert courier is not None
        if not record.active:
            next_status(record, Status.assigned)  # raises: final orders are not reassigned
        if courier.courier_id == record.courier_id:
            return None
        return assign(record, courier, actor, now, new_id)
    new = Status.packed if command.command == "packed" else Status.cancelled
    outcome = _status_change(record, new, actor, now, command.reason)
    if outcome is not None and outcome.record.courier_id is not None:
        kind = "ready_for_pickup" if new == Status.packed else "cancel"
        outcome.tasks.append((outcome.record.courier_id, _task(kind, outcome.record, now, new_id, command.reason)))
    if outcome is not None and new == Status.cancelled:
        outcome.record = replace(outcome.record, dispatch=replace(outcome.record.dispatch, waiting_since=None,
                                                                  change_msg_id=None))
    return outcome


def on_task_received(record: OrderRecord, courier_id: str, msg_id: str, kind: str, now: datetime) -> Outcome:
    """A courier's Receipt named one of its tasks for this order: `delivered_to_courier`, `read_by_courier`, or
    `change_confirmed` when it confirms the update it was asked to confirm."""
    actor = f"courier:{courier_id}"
    if kind == "change_confirmed":
        updated = replace(record, updated_at=now, dispatch=replace(record.dispatch, change_msg_id=None,
                                                                   change_since=None, change_alerted=False))
        return Outcome(record=updated,
                       happenings=[Happening(kind, record.status, actor, courier_id=courier_id)],
                       acks=[Ack(kind=kind, order_id=record.order_id, status=record.status, courier_id=courier_id,
                                 msg_id=msg_id, at=now)])
    return Outcome(
        record=record,
        happenings=[Happening(kind, record.status, actor, courier_id=courier_id)],
        acks=[Ack(kind=kind, order_id=record.order_id, status=record.status, courier_id=courier_id, msg_id=msg_id,
                  at=now)],
        state_changed=False,
    )


@dataclass(frozen=True)
class EtaRules:
    """What `track` needs of the configuration (`eta.*` and the arrival radius)."""

    detour_factor: float
    delay_step: timedelta
    arrival_radius_m: float


def track(record: OrderRecord, fix: Fix, speed_kmh: float, rules: EtaRules, now: datetime) -> Outcome | None:
    """The order's courier has a newer fix (or the order just moved on with the fix it has): distance, ETA once
    picked up, the arriving geofence, lateness. None if nothing changed."""
    if record.location is not None and fix.tst < record.location.tst:
        return None
    address = record.order.address
    tracking = record.tracking
    if address.lat is None or address.lon is None:
        if fix == record.location:
            return None
        return Outcome(record=replace(record, location=fix, updated_at=now))
    distance = haversine_m(fix.lat, fix.lon, address.lat, address.lon)
    detour = tracking.detour or rules.detour_factor
    last = record.location
    if last is not None and fix.tst > last.tst and tracking.distance_m is not None:
        ridden = haversine_m(last.lat, last.lon, fix.lat, fix.lon)
        detour = eta.next_detour(detour, ridden, tracking.distance_m - distance)
    eta_seconds, eta_at = None, None
    if record.picked_up and record.active:
        at_fix = min(datetime.fromtimestamp(fix.tst, UTC), now)
        eta_at = at_fix + timedelta(seconds=eta.eta_seconds(distance, detour, speed_kmh))
        eta_at = eta_at.replace(microsecond=0)
        eta_seconds = max(0, round((eta_at - now).total_seconds()))
    tracking = replace(tracking, distance_m=distance, detour=detour, eta_seconds=eta_seconds, eta_at=eta_at)
    outcome = Outcome(record=replace(record, location=fix, tracking=tracking, updated_at=now))
    if (record.status in (Status.picked_up, Status.en_route) and not tracking.arrived
            and distance <= rules.arrival_radius_m):
        outcome = outcome.then(_status_change(outcome.record, Status.arriving, "geofence", now,
                                              f"within {rules.arrival_radius_m:g} m of the address"))
    window = record.order.window
    late = tracking.late_eta_at
    if (eta_at is not None and window is not None and eta_at > window.end
            and (late is None or eta_at - late > rules.delay_step)):
        current = outcome.record
        current = replace(current, tracking=replace(current.tracking, late_eta_at=eta_at))
        minutes = round((eta_at - window.end).total_seconds() / 60)
        reason = f"estimated arrival {eta_at.isoformat()} is {minutes} min after the window ends"
        outcome.record = current
        outcome.happenings.append(Happening("late_risk", current.status, "gateway", courier_id=current.courier_id,
                                            courier_name=current.courier_name, reason=reason, eta_at=eta_at))
        outcome.acks.append(Ack(kind="delayed", order_id=current.order_id, status=current.status,
                                courier_id=current.courier_id, reason=reason, eta_at=eta_at, at=now))
    return outcome


def track_path(record: OrderRecord, path: Sequence[Fix], speed_kmh: float, rules: EtaRules, now: datetime,
               ) -> Outcome | None:
    """`track` along a courier's new fixes, oldest first, as one outcome: the detour learns from every leg and
    the geofence sees every fix, however many came at once (a batch under load, or what a phone stored while
    offline). None if nothing changed."""
    outcome: Outcome | None = None
    for fix in path:
        step = track(record if outcome is None else outcome.record, fix, speed_kmh, rules, now)
        outcome = step if outcome is None else outcome.then(step)
    return outcome


def waiting(record: OrderRecord, reason: str, now: datetime) -> Outcome:
    """No courier can take the order now: the shop hears `waiting_for_courier`, once per wait."""
    updated = replace(record, dispatch=replace(record.dispatch, waiting_announced=True,
                                               waiting_since=record.dispatch.waiting_since or now))
    return Outcome(record=updated, state_changed=True,
                   happenings=[Happening("waiting_for_courier", record.status, "gateway", reason=reason)])


def alert(record: OrderRecord, reason: str, now: datetime, *, about_change: bool = False,
          stop_waiting: bool = False) -> Outcome:
    """Something has waited too long (a courier, or a courier's confirmation): the shop gets one `alert`.
    With `stop_waiting`, the gateway stops looking for a courier (the shop decides)."""
    flag = {"change_alerted": True} if about_change else {"alerted": True}
    if stop_waiting:
        flag["waiting_since"] = None  # type: ignore[assignment]
    updated = replace(record, dispatch=replace(record.dispatch, **flag))
    return Outcome(record=updated, happenings=[Happening("alert", record.status, "gateway",
                                                         courier_id=record.courier_id, reason=reason)])


def hand_over(record: OrderRecord, now: datetime) -> OrderRecord:
    """A broken-down courier's order: the gateway looks for a courier to take over (until one does, or the shop
    acts)."""
    return replace(record, dispatch=replace(record.dispatch, takeover_from=record.courier_id,
                                            waiting_since=record.dispatch.waiting_since or now))


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
            courier_name=h.courier_name,
            courier_phone=h.courier_phone,
            reason=h.reason,
            reason_code=h.reason_code,
            courier_known=h.courier_known,
            auto=h.auto,
            eta_at=h.eta_at,
            media_id=h.media_id,
            stars=h.stars,
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
