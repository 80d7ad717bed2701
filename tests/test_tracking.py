"""What the pages show, as pure functions (`gateway.core.board`, `gateway.core.tracking`), and the tracking link's
life in the store: made once, given again, dead once purged or expired."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import ORDER, order
from hypothesis import given
from hypothesis import strategies as st

from gateway.bridge.service import Gateway, Inbound
from gateway.config import Settings
from gateway.core import board, lifecycle, tracking
from gateway.core.lifecycle import CourierRef, OrderRecord
from gateway.core.models import Fix, Order, Shop, ShopCommand, Status
from gateway.errors import Rejected
from gateway.store.queries import Queries
from gateway.store.tables import Store

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
FIX = Fix(lat=31.24, lon=121.48, tst=int(NOW.timestamp()))


def record(status: Status = Status.created, courier: str | None = None, **changes: object) -> OrderRecord:
    placed = lifecycle.on_order(None, Order.model_validate(order(courier_id=None)), NOW, lambda: "m1").record
    progress = placed.progress if status == Status.exception else status
    return replace(placed, status=status, progress=progress, courier_id=courier, courier_name="Wang Wei"
                   if courier else None, **changes)


def test_a_token_is_keyed_unguessable_and_the_same_every_time():
    key = bytes(range(32))
    token = tracking.token(key, "A1", "n1")
    assert len(token) == 24 and tracking.TOKEN_BYTES * 8 >= 128
    assert token == tracking.token(key, "A1", "n1")
    assert len({token, tracking.token(key, "A1", "n2"), tracking.token(key, "A2", "n1"),
                tracking.token(bytes(32), "A1", "n1")}) == 4
    assert tracking.digest(token) != token and len(tracking.digest(token)) == 64


statuses = st.sampled_from(list(Status))


@given(status=statuses, located=st.booleans(), chat_text=st.text(min_size=1, max_size=40))
def test_the_courier_is_shown_only_between_pickup_and_delivery(status, located, chat_text):
    r = record(status, "c7" if status != Status.created else None, location=FIX if located else None)
    view = tracking.view(tracking.Facts(r, None, [], rated=False), {"tile_url": ""})
    shown = status in (Status.picked_up, Status.en_route, Status.arriving) and located
    assert (view.position is not None) == shown
    assert (view.destination is not None) == shown
    text = view.model_dump_json()
    assert ORDER["recipient"]["phone"] not in text and ORDER["address"]["text"] not in text
    assert "Wei" not in text  # the courier's first name only
    assert view.can_rate == (status == Status.delivered)


def test_the_eta_is_shown_once_picked_up():
    eta = NOW + timedelta(minutes=12)
    before = record(Status.assigned, "c7", tracking=lifecycle.Tracking(eta_at=eta, eta_seconds=720))
    after = replace(before, status=Status.en_route, progress=Status.en_route)
    assert tracking.view(tracking.Facts(before, None, [], False), {}).eta_at is None
    assert tracking.view(tracking.Facts(after, None, [], False), {}).eta_at == eta


def test_a_link_expires_after_the_order_ended():
    keep = timedelta(hours=48)
    done = record(Status.delivered, "c7")
    assert not tracking.expired(done, NOW, keep, NOW + timedelta(hours=47))
    assert tracking.expired(done, NOW, keep, NOW + timedelta(hours=49))
    assert not tracking.expired(record(Status.en_route, "c7"), NOW - timedelta(days=9), keep, NOW)


# ---------------------------------------------------------------- the board


@pytest.mark.parametrize(("status", "courier", "column"), [
    (Status.created, None, "new"), (Status.assigned, "c7", "assigned"), (Status.packed, "c7", "packed"),
    (Status.picked_up, "c7", "on_the_way"), (Status.en_route, "c7", "on_the_way"),
    (Status.arriving, "c7", "arriving"), (Status.delivered, "c7", "done"), (Status.cancelled, None, "done"),
    (Status.exception, "c7", "problems")])
def test_each_status_has_its_column(status, courier, column):
    assert board.card(record(status, courier), NOW, True, NOW).column == column


def test_problems_stand_out():
    late = record(Status.en_route, "c7", tracking=lifecycle.Tracking(eta_at=NOW + timedelta(days=400)))
    assert board.problems(late, True, NOW) == ["late_risk"]
    assert "courier_offline" in board.problems(record(Status.assigned, "c7"), False, NOW)
    waiting = record(Status.created, None, dispatch=lifecycle.Dispatch(waiting_since=NOW, waiting_announced=True))
    assert board.card(waiting, NOW, None, NOW).column == "problems"
    changed = record(Status.assigned, "c7", dispatch=lifecycle.Dispatch(change_msg_id="u1"))
    assert "unconfirmed_change" in board.problems(changed, True, NOW)
    assert board.problems(record(Status.delivered, "c7"), False, NOW) == []


@given(status=statuses, has_courier=st.booleans())
def test_the_board_offers_only_what_the_gateway_accepts(status, has_courier):
    r = record(status, "c7" if has_courier and status != Status.created else None)
    for action in board.actions(r):
        command = ShopCommand(command="assign" if action in ("assign", "reassign") else action,
                              order_id=r.order_id, courier_id="c8" if action in ("assign", "reassign") else None,
                              reason="test")
        try:
            outcome = lifecycle.on_command(r, r.order.shop_id, command, NOW, lambda: "m2",
                                           courier=CourierRef("c8", known=True))
        except Rejected as exc:
            raise AssertionError(f"{action} offered on a {status} order, refused: {exc.message}") from exc
        assert outcome is not None, f"{action} offered on a {status} order does nothing"


# ---------------------------------------------------------------- links in the store


def test_the_link_is_made_once_given_again_and_dead_once_purged(tmp_path, store_at):
    store = Store(store_at)
    gateway = Gateway(store, Settings(storage={"data_dir": tmp_path}), clock=lambda: NOW.timestamp())
    gateway.public_url = "https://track.example.com/"

    def accepted(payload: dict[str, object]) -> str:
        [(_, ack)] = [(r, m) for r, m in gateway.handle_batch([Inbound("orders/in", json.dumps(payload).encode())])
                      if m.topic == "ordersys/acks" and json.loads(m.payload)["kind"] == "accepted"]
        return json.loads(ack.payload)["tracking_url"]

    link = accepted(order(courier_id=None))
    token = link.removeprefix("https://track.example.com/t/")
    assert link != token and accepted(order(courier_id=None)) == link  # a repeat: the same link
    assert accepted(order(courier_id=None, notes="ring twice")) == link  # an update: the same link
    queries = Queries(store_at)
    found = queries.tracked_order(tracking.digest(token))
    assert found is not None and found[0].order_id == ORDER["order_id"]
    kept = queries.query("SELECT * FROM tracking")
    assert kept and token not in repr(kept)  # only its digest is kept
    if isinstance(store_at, Path):
        assert token not in store_at.read_bytes().decode("latin-1")
    cancel = {"command": "cancel", "order_id": ORDER["order_id"], "reason": "test"}
    gateway.handle_batch([Inbound("operator/commands", json.dumps(cancel).encode())])
    with store.transaction():
        store.purge_personal_data(NOW + timedelta(days=1))
    assert queries.tracked_order(tracking.digest(token)) is None


def test_a_shops_notice_may_carry_the_tracking_link(tmp_path, store_at):
    templates = {"en": {"confirmed": "Order {order_id} is confirmed; follow it at {tracking_url}"}}
    store = Store(store_at)
    with store.transaction():
        store.put_shop(Shop(shop_id="rose", name="Rose & Lily", lat=31.23, lon=121.47, locale="en"), NOW)
    gateway = Gateway(store, Settings.model_validate({"notices": {"templates": templates},
                                                      "storage": {"data_dir": tmp_path},
                                                      "web": {"public_url": "https://t.example.com"}}),
                      clock=lambda: NOW.timestamp())
    rows = gateway.handle_batch([Inbound("orders/in", json.dumps(order(courier_id=None)).encode())])
    by_topic = {m.topic: json.loads(m.payload) for _, m in rows if m.topic in ("ordersys/acks", "ordersys/notices")}
    link = by_topic["ordersys/acks"]["tracking_url"]
    assert link.startswith("https://t.example.com/t/")
    assert by_topic["ordersys/notices"]["text"] == f"Order A1001 is confirmed; follow it at {link}"
