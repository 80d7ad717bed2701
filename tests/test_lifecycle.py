"""The order lifecycle, as pure functions: no broker, no database."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from conftest import order as order_payload

from gateway.core.lifecycle import FINAL, Fix, messages_for, next_status, on_command, on_fix, on_order, on_status
from gateway.core.models import Order, ShopCommand, Status, StatusUpdate
from gateway.errors import IllegalTransition, NotYours

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
_n = itertools.count()


def new_id() -> str:
    return f"m{next(_n)}"


def created(**changes):
    outcome = on_order(None, Order.model_validate(order_payload(**changes)), T0, new_id)
    assert outcome is not None
    return outcome


def record_in(status: Status, progress: Status | None = None, courier: str | None = "c7"):
    from dataclasses import replace

    return replace(created().record, status=status, progress=progress or status, courier_id=courier)


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
        outcome = on_order(record, repeat, T0, new_id, courier_known=True)
        assert outcome.record == record and not outcome.state_changed and not outcome.tasks
        assert not outcome.happenings
        [ack] = outcome.acks
        assert (ack.kind, ack.duplicate, ack.status, ack.courier_id) == ("accepted", True, Status.assigned, "c7")


def test_unknown_courier_is_accepted_but_said_to_be_unknown():
    outcome = on_order(None, Order.model_validate(order_payload()), T0, new_id, courier_known=False)
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
    outcome = on_status(record, "c7", StatusUpdate(order_id="A1001", status="exception", reason="no answer"), T0)
    assert outcome.record.status == Status.exception and outcome.record.progress == Status.en_route
    assert outcome.acks[0].reason == "no answer"


def test_only_the_assigned_courier_moves_the_order():
    with pytest.raises(NotYours, match="assigned to courier c7, not c8"):
        on_status(record_in(Status.assigned), "c8", StatusUpdate(order_id="A1001", status="picked_up"), T0)


def test_status_with_position_updates_the_order_location():
    update = StatusUpdate(order_id="A1001", status="arriving", lat=31.0, lon=121.0, at=T0)
    outcome = on_status(record_in(Status.en_route), "c7", update, T0 + timedelta(seconds=5))
    assert outcome.record.location == Fix(lat=31.0, lon=121.0, tst=int(T0.timestamp()))


def test_reassignment_cancels_the_old_courier_task_until_pickup():
    outcome = on_command(record_in(Status.packed), "rose",
                         ShopCommand(command="assign", order_id="A1001", courier_id="c9"), T0, new_id)
    assert [(c, t.kind) for c, t in outcome.tasks] == [("c7", "cancel"), ("c9", "assign")]
    assert outcome.record.status == Status.packed and outcome.record.courier_id == "c9"
    assert [(a.kind, a.courier_id) for a in outcome.acks] == [("assigned", "c9")]  # the order system hears of it
    with pytest.raises(IllegalTransition, match="cannot be reassigned"):
        on_command(record_in(Status.picked_up), "rose",
                   ShopCommand(command="assign", order_id="A1001", courier_id="c9"), T0, new_id)


def test_packed_tells_the_courier_and_cancel_cancels_its_task():
    packed = on_command(record_in(Status.assigned), "rose", ShopCommand(command="packed", order_id="A1001"), T0,
                        new_id)
    assert [(c, t.kind) for c, t in packed.tasks] == [("c7", "ready_for_pickup")]
    cancelled = on_command(packed.record, "rose", ShopCommand(command="cancel", order_id="A1001"), T0, new_id)
    assert cancelled.record.status == Status.cancelled
    assert [(c, t.kind) for c, t in cancelled.tasks] == [("c7", "cancel")]
    assert [(a.kind, a.status) for a in packed.acks + cancelled.acks] == [
        ("status_changed", Status.packed), ("status_changed", Status.cancelled)]


def test_a_cancel_task_carries_only_what_the_phone_needs_to_drop_the_job():
    for outcome in (
        on_command(record_in(Status.assigned), "rose", ShopCommand(command="assign", order_id="A1001",
                                                                     courier_id="c9"), T0, new_id),
        on_order(record_in(Status.assigned), Order.model_validate(order_payload(courier_id="c9")), T0, new_id),
        on_command(record_in(Status.assigned), "rose", ShopCommand(command="cancel", order_id="A1001"), T0, new_id),
    ):
        [cancel] = [task for courier, task in outcome.tasks if task.kind == "cancel"]
        assert cancel.order is None
        text = cancel.model_dump_json()
        for secret in ("+8613800000000", "Li Na", "Sunshine", "c9", "roses"):
            assert secret not in text


def test_an_operator_may_command_any_shops_order():
    outcome = on_command(record_in(Status.assigned), None, ShopCommand(command="packed", order_id="A1001"), T0,
                         new_id)
    assert outcome.record.status == Status.packed and outcome.happenings[0].actor == "operator"


def test_shops_command_only_their_own_orders():
    with pytest.raises(NotYours):
        on_command(record_in(Status.assigned), "tulip", ShopCommand(command="packed", order_id="A1001"), T0, new_id)


def test_fix_only_moves_forward_in_time():
    record = record_in(Status.en_route)
    newer = on_fix(record, Fix(lat=1, lon=2, tst=200), T0)
    assert newer.record.location.tst == 200
    assert on_fix(newer.record, Fix(lat=3, lon=4, tst=100), T0) is None
