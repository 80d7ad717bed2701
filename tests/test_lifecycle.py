"""The order lifecycle, as pure functions: no broker, no database."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from conftest import order as order_payload

from gateway.core.lifecycle import (
    FINAL,
    CourierRef,
    EtaRules,
    Fix,
    assign,
    messages_for,
    next_status,
    on_command,
    on_order,
    on_status,
    on_task_received,
    refuse,
    track,
)
from gateway.core.models import Order, ShopCommand, Status, StatusUpdate
from gateway.errors import IllegalTransition, NotYours

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
_n = itertools.count()


def new_id() -> str:
    return f"m{next(_n)}"


C7 = CourierRef("c7", name="Zhang Wei", phone="+8613911112222", known=True)
C9 = CourierRef("c9", name="Li Lei", phone="+8613933334444", known=True)


def created(**changes):
    payload = order_payload(**changes)
    courier = None if payload["courier_id"] is None else replace(C7, courier_id=payload["courier_id"])
    return on_order(None, Order.model_validate(payload), T0, new_id, courier=courier)


def record_in(status: Status, progress: Status | None = None, courier: str | None = "c7"):
    return replace(created().record, status=status, progress=progress or status, courier_id=courier)


def status(record, courier: str, **update):
    return on_status(record, courier, StatusUpdate(order_id=record.order_id, **update), T0, new_id)


def command(record, shop, **kw):
    courier = CourierRef(kw["courier_id"]) if "courier_id" in kw else None
    return on_command(record, shop, ShopCommand(order_id=record.order_id, **kw), T0, new_id, courier=courier)


def test_new_order_with_courier_is_created_assigned_acked_and_tasked():
    outcome = created()
    assert outcome.record.status == Status.assigned
    assert [h.kind for h in outcome.happenings] == ["created", "assigned"]
    assert [(c, t.kind) for c, t in outcome.tasks] == [("c7", "assign")]
    assert [(a.kind, a.courier_id) for a in outcome.acks] == [("accepted", "c7"), ("assigned", "c7")]
    topics = [m.topic for m in messages_for(outcome)]
    assert topics == ["shops/rose/orders", "shops/rose/orders", "couriers/c7/tasks", "orders/A1001/state",
                      "ordersys/acks", "ordersys/acks"]
    assert [m.retain for m in messages_for(outcome)] == [False, False, False, True, False, False]


def test_new_order_without_courier_waits_in_created():
    outcome = created(courier_id=None)
    assert outcome.record.status == Status.created and outcome.tasks == []


def test_exact_duplicate_changes_nothing_but_is_acked_again_and_missing_courier_keeps_the_assignment():
    record = created().record
    for repeat in (record.order, Order.model_validate(order_payload(courier_id=None))):
        outcome = on_order(record, repeat, T0, new_id, courier=C7)
        assert outcome.record == record and not outcome.state_changed and not outcome.tasks
        assert not outcome.happenings
        [ack] = outcome.acks
        assert (ack.kind, ack.duplicate, ack.status, ack.courier_id) == ("accepted", True, Status.assigned, "c7")


def test_unknown_courier_is_accepted_but_said_to_be_unknown():
    outcome = on_order(None, Order.model_validate(order_payload()), T0, new_id, courier=CourierRef("c7", known=False))
    assert [a.courier_known for a in outcome.acks] == [False, False]
    assigned = next(h for h in outcome.happenings if h.kind == "assigned")
    assert assigned.courier_known is False
    event = next(m for m in messages_for(outcome) if b'"kind":"assigned"' in m.payload)
    assert b'"courier_known":false' in event.payload


def test_update_after_final_status_is_refused():
    with pytest.raises(IllegalTransition, match="delivered"):
        on_order(record_in(Status.delivered), Order.model_validate(order_payload(notes="new")), T0, new_id)


def test_order_cannot_move_to_another_shop():
    with pytest.raises(NotYours, match="belongs to shop rose"):
        on_order(created().record, Order.model_validate(order_payload(shop_id="tulip")), T0, new_id)


@pytest.mark.parametrize(
    ("current", "new", "expected"),
    [
        (Status.assigned, Status.picked_up, Status.picked_up),  # skipping packed is fine
        (Status.created, Status.delivered, Status.delivered),
        (Status.en_route, Status.exception, Status.exception),
        (Status.en_route, Status.failed, Status.failed),
        (Status.packed, Status.cancelled, Status.cancelled),
        (Status.arriving, Status.arriving, None),  # already there: a duplicate
    ],
)
def test_allowed_moves(current, new, expected):
    assert next_status(record_in(current), new) == expected


@pytest.mark.parametrize(
    ("current", "new"),
    [(Status.en_route, Status.picked_up), (Status.packed, Status.assigned), (Status.arriving, Status.created)],
)
def test_backward_moves_are_refused(current, new):
    with pytest.raises(IllegalTransition, match="cannot go back"):
        next_status(record_in(current), new)


@pytest.mark.parametrize("final", sorted(FINAL))
@pytest.mark.parametrize("new", list(Status))
def test_final_statuses_are_final_and_repeating_one_is_a_duplicate(final, new):
    if new == final:
        assert next_status(record_in(Status(final)), new) is None
        return
    with pytest.raises(IllegalTransition, match=f"already {final}"):
        next_status(record_in(Status(final)), new)


def test_exception_resumes_where_it_interrupted_or_later_but_not_earlier():
    interrupted = record_in(Status.exception, progress=Status.en_route)
    assert next_status(interrupted, Status.en_route) == Status.en_route
    assert next_status(interrupted, Status.delivered) == Status.delivered
    with pytest.raises(IllegalTransition):
        next_status(interrupted, Status.picked_up)


def test_status_keeps_progress_through_exception():
    record = record_in(Status.en_route)
    outcome = status(record, "c7", status="exception", reason="no answer")
    assert outcome.record.status == Status.exception and outcome.record.progress == Status.en_route
    assert outcome.acks[0].reason == "no answer"
    assert outcome.acks[0].reason_code == "other" and outcome.happenings[0].kind == "exception"


def test_only_the_assigned_courier_moves_the_order():
    with pytest.raises(NotYours, match="assigned to courier c7, not c8"):
        status(record_in(Status.assigned), "c8", status="picked_up")


def test_status_with_position_updates_the_order_location():
    update = StatusUpdate(order_id="A1001", status="arriving", lat=31.0, lon=121.0, at=T0)
    outcome = on_status(record_in(Status.en_route), "c7", update, T0 + timedelta(seconds=5), new_id)
    assert outcome.record.location == Fix(lat=31.0, lon=121.0, tst=int(T0.timestamp()))


def test_reassignment_cancels_the_old_courier_task_until_pickup():
    outcome = command(record_in(Status.packed), "rose", command="assign", courier_id="c9")
    assert [(c, t.kind) for c, t in outcome.tasks] == [("c7", "cancel"), ("c9", "assign")]
    assert outcome.record.status == Status.packed and outcome.record.courier_id == "c9"
    assert [(a.kind, a.courier_id) for a in outcome.acks] == [("assigned", "c9")]  # the order system hears of it
    with pytest.raises(IllegalTransition, match="cannot be reassigned"):
        command(record_in(Status.picked_up), "rose", command="assign", courier_id="c9")


def test_packed_tells_the_courier_and_cancel_cancels_its_task():
    packed = command(record_in(Status.assigned), "rose", command="packed")
    assert [(c, t.kind) for c, t in packed.tasks] == [("c7", "ready_for_pickup")]
    cancelled = command(packed.record, "rose", command="cancel")
    assert cancelled.record.status == Status.cancelled
    assert [(c, t.kind) for c, t in cancelled.tasks] == [("c7", "cancel")]
    assert [(a.kind, a.status) for a in packed.acks + cancelled.acks] == [
        ("status_changed", Status.packed), ("status_changed", Status.cancelled)]


def test_a_cancel_task_carries_only_what_the_phone_needs_to_drop_the_job():
    for outcome in (
        command(record_in(Status.assigned), "rose", command="assign", courier_id="c9"),
        on_order(record_in(Status.assigned), Order.model_validate(order_payload(courier_id="c9")), T0, new_id,
                 courier=C9),
        command(record_in(Status.assigned), "rose", command="cancel"),
    ):
        [cancel] = [task for courier, task in outcome.tasks if task.kind == "cancel"]
        assert cancel.order is None
        text = cancel.model_dump_json()
        for secret in ("+8613800000000", "Li Na", "Sunshine", "c9", "roses"):
            assert secret not in text


def test_an_operator_may_command_any_shops_order():
    outcome = command(record_in(Status.assigned), None, command="packed")
    assert outcome.record.status == Status.packed and outcome.happenings[0].actor == "operator"


def test_shops_command_only_their_own_orders():
    with pytest.raises(NotYours):
        command(record_in(Status.assigned), "tulip", command="packed")




# ---------------------------------------------------------------- who has the order


def test_every_assignment_is_an_event_a_task_and_an_ack_and_only_the_shop_sees_the_phone():
    outcome = assign(created(courier_id=None).record, C9, "gateway", T0, new_id, auto=True)
    assert [(h.kind, h.auto, h.courier_name) for h in outcome.happenings] == [("assigned", True, "Li Lei")]
    assert [(c, t.kind) for c, t in outcome.tasks] == [("c9", "assign")]
    assert [(a.kind, a.courier_id, a.auto) for a in outcome.acks] == [("assigned", "c9", True)]
    for message in messages_for(outcome):
        assert (C9.phone.encode() in message.payload) == (message.topic == "shops/rose/orders"), message.topic
    assert outcome.record.courier_name == "Li Lei" and outcome.record.state().courier_name == "Li Lei"


def test_a_courier_refuses_before_pickup_and_is_never_offered_it_again():
    outcome = status(record_in(Status.assigned), "c7", status="rejected", reason="too far")
    record = outcome.record
    assert (record.status, record.courier_id, record.dispatch.refused_by) == (Status.created, None, ("c7",))
    assert record.dispatch.waiting_since == T0
    assert [(h.kind, h.courier_id, h.reason) for h in outcome.happenings] == [("rejected_by_courier", "c7", "too far")]
    assert [(a.kind, a.courier_id) for a in outcome.acks] == [("unassigned", "c7")]
    [(courier, cancel)] = outcome.tasks
    assert courier == "c7" and cancel.kind == "cancel" and cancel.order is None and cancel.reason == "refused"
    packed = status(record_in(Status.packed), "c7", status="rejected").record
    assert packed.status == Status.packed and packed.courier_id is None  # the goods stay packed for the next one
    with pytest.raises(IllegalTransition, match="only before pickup"):
        status(record_in(Status.picked_up), "c7", status="rejected")


def test_after_an_exception_the_order_changes_hands_even_after_pickup():
    broken = status(record_in(Status.en_route), "c7", status="exception", reason_code="vehicle_breakdown",
                    reason="chain broke").record
    assert broken.status == Status.exception and broken.progress == Status.en_route
    outcome = command(broken, "rose", command="assign", courier_id="c9")
    assert (outcome.record.status, outcome.record.progress, outcome.record.courier_id) == (
        Status.assigned, Status.assigned, "c9")
    assert [(c, t.kind) for c, t in outcome.tasks] == [("c7", "cancel"), ("c9", "assign")]
    assert next_status(outcome.record, Status.picked_up) == Status.picked_up  # the new courier picks it up


def test_an_exception_carries_its_code_to_the_shop_and_the_order_system():
    outcome = status(record_in(Status.picked_up), "c7", status="exception", reason_code="recipient_absent",
                     reason="nobody home")
    [event] = [m for m in messages_for(outcome) if m.topic == "shops/rose/orders"]
    assert b'"kind":"exception"' in event.payload and b'"reason_code":"recipient_absent"' in event.payload
    assert outcome.acks[0].reason_code == "recipient_absent" and outcome.acks[0].kind == "status_changed"


# ---------------------------------------------------------------- changes the courier must confirm


def test_an_update_lists_its_changes_and_waits_for_the_couriers_confirmation():
    record = created().record
    new = order_payload(address={"text": "Moon Bay 7", "lat": 31.25, "lon": 121.5}, notes="ring twice")
    outcome = on_order(record, Order.model_validate(new), T0, new_id, courier=C7)
    [(courier, task)] = outcome.tasks
    assert courier == "c7" and task.kind == "update" and task.confirm_required
    assert {c.field: (c.old, c.new) for c in task.changes} == {
        "address": ({"text": "Sunshine Estate 5-3-401", "lat": 31.2304, "lon": 121.4737},
                    {"text": "Moon Bay 7", "lat": 31.25, "lon": 121.5}),
        "notes": ("card: happy birthday", "ring twice"),
    }
    assert [h.kind for h in outcome.happenings] == ["updated", "change_pending"]
    pending = outcome.record
    assert pending.dispatch.change_msg_id == task.msg_id and pending.state().unconfirmed_change
    confirmed = on_task_received(pending, "c7", task.msg_id, "change_confirmed", T0)
    assert [h.kind for h in confirmed.happenings] == ["change_confirmed"]
    assert [(a.kind, a.msg_id) for a in confirmed.acks] == [("change_confirmed", task.msg_id)]
    assert not confirmed.record.state().unconfirmed_change


# ---------------------------------------------------------------- where the courier is

RULES = EtaRules(detour_factor=1.3, delay_step=timedelta(minutes=10), arrival_radius_m=500)
DOOR = (31.2304, 121.4737)


def at(north_m: float, seconds: int) -> Fix:
    from gateway.core.geo import offset

    lat, lon = offset(*DOOR, north_m, 0)
    return Fix(lat=lat, lon=lon, tst=int(T0.timestamp()) + seconds)


def test_distance_before_pickup_and_eta_only_once_picked_up():
    before = track(record_in(Status.assigned), at(2000, 0), 15.0, RULES, T0).record
    assert round(before.tracking.distance_m) == 2000 and before.tracking.eta_at is None
    after = track(record_in(Status.picked_up), at(2000, 0), 15.0, RULES, T0).record
    assert after.tracking.eta_seconds == round(2000 * 1.3 / (15 / 3.6))
    assert after.state().eta_at == T0 + timedelta(seconds=after.tracking.eta_seconds)
    assert track(after, at(1900, -10), 15.0, RULES, T0) is None  # an older fix changes nothing


def test_the_arriving_geofence_fires_once_and_does_not_flap():
    record = replace(record_in(Status.en_route), order=Order.model_validate(order_payload(window=None)))
    near = track(record, at(450, 0), 15.0, RULES, T0)
    assert near.record.status == Status.arriving and near.happenings[0].actor == "geofence"
    assert [a.kind for a in near.acks] == ["status_changed"]
    away = track(near.record, at(800, 30), 15.0, RULES, T0)
    back = track(away.record, at(300, 60), 15.0, RULES, T0)
    assert not away.happenings and not back.happenings and back.record.status == Status.arriving


def test_lateness_is_told_once_and_again_only_when_the_eta_worsens_by_a_step():
    record = record_in(Status.en_route)  # the window ends at 11:00 +08:00, i.e. T0 - 6 h: any ETA is late
    first = track(record, at(3000, 0), 15.0, RULES, T0)
    assert [h.kind for h in first.happenings] == ["late_risk"] and [a.kind for a in first.acks] == ["delayed"]
    assert first.acks[0].eta_at == first.record.tracking.eta_at
    slightly = track(first.record, at(3000, 60), 15.0, RULES, T0 + timedelta(minutes=5))
    assert not slightly.happenings
    much = track(slightly.record, at(3000, 900), 15.0, RULES, T0 + timedelta(minutes=15))
    assert [h.kind for h in much.happenings] == ["late_risk"]


def test_a_refusal_is_the_lifecycle_s_and_the_shop_s_assignment_resets_it():
    refused = refuse(record_in(Status.assigned), "c7", "no receipt in time", T0, new_id, actor="gateway")
    assert refused.happenings[0].actor == "gateway"
    reassigned = assign(refused.record, C9, "gateway", T0, new_id, auto=True)
    assert reassigned.record.dispatch.refused_by == ("c7",) and reassigned.record.dispatch.waiting_since is None
