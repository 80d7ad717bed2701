"""Dispatch and live tracking through the real broker: registered shops and couriers, nearest-idle assignment,
refusals and timeouts, ETA, the arriving geofence, lateness, exceptions, changes to confirm, several devices."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import SHOP, GatewayProcess, Peer, at, launch, order, register, shop_order, store_config

from gateway.bridge.service import Gateway, Inbound
from gateway.config import Settings
from gateway.core.geo import offset
from gateway.core.models import CourierOrder, CourierOrders
from gateway.store.tables import Store

TIMERS = {"assignment": {"alert_after_seconds": 2, "accept_timeout_seconds": 2},
          "changes": {"confirm_timeout_seconds": 2}, "bridge": {"task_retry_seconds": 30}}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[GatewayProcess]:
    """The module's gateway, on each store: every dispatch test runs on both."""
    gateway = launch(tmp_path_factory.mktemp("dispatch"),
                     config={**TIMERS, "log_level": "DEBUG", **store_config(request, "dispatch")})
    yield gateway
    gateway.kill()


def online(gw: GatewayProcess, peers: Callable[..., Peer], courier: str, north_m: float, east_m: float = 0) -> Peer:
    """A courier's phone: online, a fresh fix at that place, listening to its tasks, errors and orders."""
    phone = peers(gw.port, subscribe=(f"couriers/{courier}/tasks", f"couriers/{courier}/errors",
                                      f"couriers/{courier}/orders", f"couriers/{courier}/sync"))
    phone.publish(f"couriers/{courier}/presence", {"online": True})
    phone.publish(f"couriers/{courier}/gps", at(north_m, east_m, ago=5))  # later fixes of a test are newer
    gw.wait_log(f"courier presence courier_id={courier} online=True")
    return phone


def watcher(gw: GatewayProcess, peers: Callable[..., Peer], shop: str) -> Peer:
    return peers(gw.port, subscribe=(f"shops/{shop}/orders", "ordersys/acks"))


def events(peer: Peer, shop: str, oid: str, kind: str, count: int = 1) -> list[dict[str, Any]]:
    return peer.wait_for(f"shops/{shop}/orders", lambda e: e["order_id"] == oid and e["kind"] == kind, count=count)


def acks(peer: Peer, oid: str, kind: str, count: int = 1) -> list[dict[str, Any]]:
    return peer.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["kind"] == kind, count=count)


# ---------------------------------------------------------------- 1. shops and couriers are known


def test_the_registry_is_changed_from_the_cli_without_a_restart(gw, peers, ids):
    shop, c1 = ids("shop"), ids("c")
    added = gw.cli("shops", "add", shop, "--name", "Rose & Lily", "--lat", str(SHOP[0]), "--lon", str(SHOP[1]),
                      "--assignment", "nearest_idle", "--timezone", "Asia/Shanghai", "--locale", "en")
    assert added.returncode == 0, added.stderr
    assert gw.cli("couriers", "add", c1, "--name", "Zhang Wei", "--shop", shop, "--max-active", "2",
                     "--phone", "+8613911112222").returncode == 0
    [listed] = [json.loads(line) for line in gw.cli("shops", "list", "--json").stdout.splitlines()
                if json.loads(line)["shop_id"] == shop]
    assert listed["assignment"] == "nearest_idle" and listed["locale"] == "en"
    phone = online(gw, peers, c1, 100)
    terminal = watcher(gw, peers, shop)
    oid = ids("A")
    terminal.publish("orders/in", shop_order(oid, shop))
    [assigned] = events(terminal, shop, oid, "assigned")
    assert assigned["courier_id"] == c1 and assigned["courier_name"] == "Zhang Wei" and assigned["auto"] is True
    assert assigned["order"]["courier_name"] == "Zhang Wei"
    [ack] = acks(terminal, oid, "assigned")
    assert ack["auto"] is True and ack["courier_id"] == c1
    phone.wait_for(f"couriers/{c1}/tasks", lambda t: t["kind"] == "assign" and t["order_id"] == oid)
    shown = gw.cli("couriers", "list").stdout
    assert "Zhang Wei" in next(line for line in shown.splitlines() if c1 in line)

    assert gw.cli("shops", "set", shop, "--assignment", "fixed", "--default-courier", c1).returncode == 0
    second = ids("B")
    terminal.publish("orders/in", shop_order(second, shop))
    [fixed] = events(terminal, shop, second, "assigned")
    assert fixed["courier_id"] == c1 and fixed["auto"] is False  # the shop's default courier, not a choice
    bad = gw.cli("couriers", "add", ids("x"), "--name", "X", "--shop", "nowhere")
    assert bad.returncode == 1 and "shop nowhere is not registered" in bad.stderr


def test_a_couriers_phone_reaches_its_shop_and_nobody_else(gw, peers, ids):
    shop, courier = ids("shop"), ids("c")
    register(gw, shop, {courier: "Li Lei"}, assignment="nearest_idle")
    everyone = peers(gw.port, subscribe=("#",))
    online(gw, peers, courier, 200)
    oid = ids("A")
    everyone.publish("orders/in", shop_order(oid, shop))
    everyone.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["kind"] == "assigned")
    everyone.wait_for(f"couriers/{courier}/orders")
    carrying = {m.topic for m in everyone.messages if b"+8613900001111" in m.payload}
    assert carrying == {f"shops/{shop}/orders"}


# ---------------------------------------------------------------- 2. assignment


def test_nearest_idle_picks_the_least_busy_then_the_nearest(gw, peers, ids):
    shop, near, far, busy = ids("shop"), ids("near"), ids("far"), ids("busy")
    register(gw, shop, {near: "Near", far: "Far", busy: "Busy"}, assignment="nearest_idle")
    for courier, north in ((near, 300), (far, 2500), (busy, 50)):
        online(gw, peers, courier, north)
    terminal = watcher(gw, peers, shop)
    first = ids("A")
    terminal.publish("orders/in", shop_order(first, shop, courier_id=busy))  # busy now has one order
    events(terminal, shop, first, "assigned")
    second, third = ids("B"), ids("C")
    terminal.publish("orders/in", shop_order(second, shop))
    assert events(terminal, shop, second, "assigned")[0]["courier_id"] == near  # idle and nearer than far
    terminal.publish("orders/in", shop_order(third, shop))
    assert events(terminal, shop, third, "assigned")[0]["courier_id"] == far  # the only idle one left


def test_with_nobody_eligible_the_order_waits_alerts_once_and_goes_to_the_first_to_come_online(gw, peers, ids):
    shop, courier = ids("shop"), ids("c")
    register(gw, shop, {courier: "Wang"}, assignment="nearest_idle")
    terminal = watcher(gw, peers, shop)
    oid = ids("A")
    terminal.publish("orders/in", shop_order(oid, shop))
    events(terminal, shop, oid, "waiting_for_courier")
    [alert] = events(terminal, shop, oid, "alert")  # assignment.alert_after_seconds is 2 here
    assert "no courier for" in alert["reason"]
    online(gw, peers, courier, 400)
    [assigned] = events(terminal, shop, oid, "assigned")
    assert assigned["courier_id"] == courier and assigned["auto"] is True
    assert len(terminal.on(f"shops/{shop}/orders", lambda e: e["kind"] in ("alert", "waiting_for_courier")
                           and e["order_id"] == oid)) == 2


def test_a_refused_order_goes_to_the_next_courier_never_back(gw, peers, ids):
    shop, first, second = ids("shop"), ids("first"), ids("second")
    register(gw, shop, {first: "First", second: "Second"}, assignment="nearest_idle")
    phone = online(gw, peers, first, 100)
    other = online(gw, peers, second, 2000)
    terminal = watcher(gw, peers, shop)
    oid = ids("A")
    terminal.publish("orders/in", shop_order(oid, shop))
    [task] = phone.wait_for(f"couriers/{first}/tasks", lambda t: t["kind"] == "assign")
    phone.publish(f"couriers/{first}/status", {"order_id": oid, "status": "rejected", "reason": "flat tyre"})
    [refused] = events(terminal, shop, oid, "rejected_by_courier")
    assert refused["courier_id"] == first and refused["reason"] == "flat tyre"
    [unassigned] = acks(terminal, oid, "unassigned")
    assert unassigned["courier_id"] == first
    other.wait_for(f"couriers/{second}/tasks", lambda t: t["kind"] == "assign" and t["order_id"] == oid)
    phone.wait_for(f"couriers/{first}/tasks", lambda t: t["kind"] == "cancel" and t["order_id"] == oid)
    other.publish(f"couriers/{second}/status", {"order_id": oid, "status": "rejected"})
    events(terminal, shop, oid, "waiting_for_courier")  # nobody left: never back to the first
    assert [e["courier_id"] for e in terminal.on(f"shops/{shop}/orders", lambda e: e["kind"] == "assigned"
                                                  and e["order_id"] == oid)] == [first, second]
    assert task["msg_id"]


def test_a_fixed_shop_hears_of_a_refusal_and_decides(gw, peers, ids):
    shop, courier = ids("shop"), ids("c")
    register(gw, shop, {courier: "Zhao"})
    terminal = watcher(gw, peers, shop)
    oid = ids("A")
    terminal.publish("orders/in", shop_order(oid, shop, courier_id=courier))
    events(terminal, shop, oid, "assigned")
    terminal.publish(f"couriers/{courier}/status", {"order_id": oid, "status": "rejected", "reason": "off shift"})
    [refused] = events(terminal, shop, oid, "rejected_by_courier")
    assert refused["order"]["courier_id"] is None and refused["status"] == "created"
    other = ids("other")
    terminal.publish(f"shops/{shop}/commands", {"command": "assign", "order_id": oid, "courier_id": other})
    assert events(terminal, shop, oid, "assigned", count=2)[1]["courier_id"] == other


def test_an_assignment_without_a_receipt_moves_on_after_the_accept_timeout(gw, peers, ids):
    shop, silent, next_one = ids("shop"), ids("silent"), ids("next")
    register(gw, shop, {silent: "Silent", next_one: "Next"}, assignment="nearest_idle")
    online(gw, peers, silent, 50)
    other = online(gw, peers, next_one, 900)
    terminal = watcher(gw, peers, shop)
    oid = ids("A")
    terminal.publish("orders/in", shop_order(oid, shop))
    assert events(terminal, shop, oid, "assigned")[0]["courier_id"] == silent
    [timed_out] = events(terminal, shop, oid, "rejected_by_courier")  # accept_timeout_seconds is 2 here
    assert timed_out["courier_id"] == silent and "no receipt" in timed_out["reason"]
    [task] = other.wait_for(f"couriers/{next_one}/tasks", lambda t: t["kind"] == "assign")
    other.publish(f"couriers/{next_one}/receipts", {"msg_ids": [task["msg_id"]]})
    acks(terminal, oid, "delivered_to_courier")


# ---------------------------------------------------------------- 3. where the courier is, and when it arrives


def test_eta_on_a_straight_track_at_18_kmh_is_within_20_percent_after_five_fixes(gw, peers, ids):
    shop, courier = ids("shop"), ids("c")
    register(gw, shop, {courier: "Sun"})
    terminal = peers(gw.port, subscribe=("ordersys/acks",))
    oid = ids("A")
    terminal.publish("orders/in", shop_order(oid, shop, courier_id=courier, window=None))
    terminal.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["kind"] == "assigned")
    phone = peers(gw.port, subscribe=(f"orders/{oid}/state", f"couriers/{courier}/errors"))
    phone.publish(f"couriers/{courier}/status", {"order_id": oid, "status": "picked_up"})
    for n in range(5):  # from the shop toward the door, 3 km away, a fix every 30 s (the last one now)
        phone.publish(f"couriers/{courier}/gps", at(150 * n, ago=30 * (4 - n)))
    [state] = phone.wait_for(f"orders/{oid}/state", lambda s: s["distance_m"] is not None
                             and round(s["distance_m"]) == 2400 and s["eta_seconds"] is not None)
    truth = 2400 / 5.0  # 18 km/h = 5 m/s
    assert abs(state["eta_seconds"] - truth) <= 0.2 * truth, state
    assert state["eta_at"] is not None and state["status"] == "picked_up"


def test_the_arriving_geofence_fires_once_with_actor_geofence(gw, peers, ids):
    shop, courier = ids("shop"), ids("c")
    register(gw, shop, {courier: "Qian"})
    terminal = watcher(gw, peers, shop)
    oid = ids("A")
    terminal.publish("orders/in", shop_order(oid, shop, courier_id=courier, window=None))
    terminal.publish(f"couriers/{courier}/status", {"order_id": oid, "status": "en_route"})
    terminal.publish(f"couriers/{courier}/gps", at(3000 - 450, ago=20))  # 450 m from the door
    [arriving] = terminal.wait_for(f"shops/{shop}/orders", lambda e: e["order_id"] == oid and e["status"] == "arriving")
    assert arriving["kind"] == "status"
    [ack] = terminal.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["status"] == "arriving")
    assert ack["kind"] == "status_changed"
    terminal.publish(f"couriers/{courier}/gps", at(3000 - 900, ago=10))  # out of the radius again …
    terminal.publish(f"couriers/{courier}/gps", at(3000 - 200, ago=5))  # … and back in
    terminal.publish(f"couriers/{courier}/status", {"order_id": oid, "status": "delivered"})
    acks(terminal, oid, "status_changed", count=3)  # en_route, arriving, delivered: arriving only once
    timeline = gw.queries.timeline(oid)
    assert [e["actor"] for e in timeline if e["status"] == "arriving" and e["kind"] == "status"] == ["geofence"]


def test_a_late_order_warns_the_shop_and_the_order_system_once_per_step(gw, peers, ids):
    shop, courier = ids("shop"), ids("c")
    register(gw, shop, {courier: "Zhou"})
    terminal = watcher(gw, peers, shop)
    oid = ids("A")
    now = datetime.now(UTC)
    window = {"start": (now - timedelta(hours=1)).isoformat(), "end": (now + timedelta(minutes=2)).isoformat()}
    terminal.publish("orders/in", shop_order(oid, shop, courier_id=courier, window=window))
    terminal.publish(f"couriers/{courier}/status", {"order_id": oid, "status": "picked_up"})
    terminal.publish(f"couriers/{courier}/gps", at(0, ago=2))  # 3 km away: about 15 min at e-bike speed
    [risk] = events(terminal, shop, oid, "late_risk")
    [delayed] = acks(terminal, oid, "delayed")
    assert delayed["eta_at"] == risk["eta_at"] and datetime.fromisoformat(delayed["eta_at"]) > now + timedelta(
        minutes=2)
    terminal.publish(f"couriers/{courier}/gps", at(10, ago=1))  # about the same ETA: not again
    terminal.publish(f"couriers/{courier}/status", {"order_id": oid, "status": "en_route"})
    acks(terminal, oid, "status_changed", count=2)
    assert len(terminal.on("ordersys/acks", lambda a: a["order_id"] == oid and a["kind"] == "delayed")) == 1


def test_a_couriers_active_orders_are_retained_for_a_reconnecting_phone(gw, peers, ids):
    shop, courier = ids("shop"), ids("c")
    register(gw, shop, {courier: "Wu"})
    terminal = peers(gw.port, subscribe=("ordersys/acks",))
    wanted = [ids("A"), ids("B")]
    for oid in wanted:
        terminal.publish("orders/in", shop_order(oid, shop, courier_id=courier))
    terminal.publish(f"couriers/{courier}/status", {"order_id": wanted[0], "status": "picked_up"})
    terminal.wait_for("ordersys/acks", lambda a: a["order_id"] == wanted[0] and a["status"] == "picked_up")
    phone = peers(gw.port, subscribe=(f"couriers/{courier}/orders",))
    [mine] = phone.wait_for(f"couriers/{courier}/orders", lambda m: len(m["orders"]) == 2)
    assert {(o["order_id"], o["status"]) for o in mine["orders"]} == {(wanted[0], "picked_up"),
                                                                       (wanted[1], "assigned")}
    assert mine["orders"][0]["address"] == "Moon Bay 7" and "window" in mine["orders"][0]
    terminal.publish(f"couriers/{courier}/status", {"order_id": wanted[0], "status": "delivered"})
    [left] = phone.wait_for(f"couriers/{courier}/orders", lambda m: len(m["orders"]) == 1)
    assert left["orders"][0]["order_id"] == wanted[1]
    phone.publish(f"couriers/{courier}/orders/get", {})  # where no broker retains it, the phone asks
    *_, again = phone.wait_for(f"couriers/{courier}/orders", lambda m: len(m["orders"]) == 1, count=2)
    assert again["orders"] == left["orders"]


def test_how_the_fixes_were_batched_changes_no_speed_and_no_eta(tmp_path, store_at):
    """Fixes come one per transaction while the gateway keeps up, many at once under load (always, on PostgreSQL's
    slower commits) or when a phone back in coverage sends what it stored: the speed and each order's detour learn
    from every leg either way, so the same track gives the same ETA."""
    now = datetime.now(UTC).timestamp()
    gateway = Gateway(Store(store_at), Settings(storage={"data_dir": tmp_path}), clock=lambda: now)

    def run(courier: str, batches: list[list[tuple[str, dict[str, Any]]]]) -> tuple[Any, ...]:
        for batch in batches:
            gateway.handle_batch([Inbound(f"couriers/{courier}/{kind}", json.dumps(body).encode())
                                  for kind, body in batch])
        [record] = gateway.store.active_orders_of(courier)
        speed = gateway.store.speed(courier)
        return round(speed.kmh, 6), speed.samples, record.tracking.detour, record.tracking.eta_seconds

    tracks = {}
    for courier, together in (("one-by-one", False), ("all-at-once", True)):
        oid = f"A-{courier}"
        gateway.handle_batch([Inbound("orders/in", json.dumps(shop_order(oid, "rose", courier_id=courier)).encode())])
        steps = [("status", {"order_id": oid, "status": "picked_up"}),
                 *(("gps", at(150 * n, ago=30 * (4 - n))) for n in range(5))]
        tracks[courier] = run(courier, [steps] if together else [[step] for step in steps])
    assert tracks["one-by-one"] == tracks["all-at-once"]
    kmh, samples, _, eta_seconds = tracks["all-at-once"]
    assert samples == 4 and abs(kmh - 18) < 0.5 and abs(eta_seconds - 2400 / 5) <= 0.2 * 2400 / 5


def test_the_active_order_list_is_written_byte_for_byte_as_its_model_would_be(tmp_path, store_at):
    """The list is rebuilt for every batch that touched the courier, so it is written without the models: the same
    bytes as CourierOrders' JSON, windows in any zone or none, with an ETA or none, any characters in the address."""
    clock = 1_800_000_000.25
    gateway = Gateway(Store(store_at), Settings(storage={"data_dir": tmp_path}), clock=lambda: clock)

    def send(topic: str, payload: dict[str, Any]) -> None:
        gateway.handle_batch([Inbound(topic, json.dumps(payload).encode())])

    send("orders/in", order(order_id="A1"))  # its window at +08:00
    send("orders/in", order(order_id="A2", window=None, address={"text": 'Jade "Tower" 玉楼 \\ 3F\n\x01'}))
    send("orders/in", order(order_id="A3", window={"start": "2026-11-22T01:00:00Z", "end": "2026-11-22T03:30:00.5Z"}))
    send("orders/in", order(order_id="A4"))
    for oid in ("A1", "A3"):
        send("couriers/c7/status", {"order_id": oid, "status": "picked_up"})
    send("couriers/c7/status", {"order_id": "A4", "status": "delivered"})
    lat, lon = offset(*SHOP, -3000, 0)
    send("couriers/c7/gps", {"_type": "location", "lat": lat, "lon": lon, "tst": int(clock) - 5})
    now = datetime.fromtimestamp(clock + 0.000123, UTC)
    records = sorted(gateway.store.active_orders_of("c7"), key=lambda r: r.order_id)
    expected = CourierOrders(courier_id="c7", at=now, orders=[
        CourierOrder(order_id=r.order_id, status=r.status, address=r.order.address.text, window=r.order.window,
                     eta_seconds=r.tracking.eta_seconds, eta_at=r.tracking.eta_at) for r in records])
    assert [(o.order_id, o.window is None, o.eta_at is None) for o in expected.orders] == [
        ("A1", False, False), ("A2", True, True), ("A3", False, False)]
    assert gateway.dispatch.courier_orders("c7", now).payload == expected.model_dump_json().encode()


# ---------------------------------------------------------------- 4. exceptions and reassignment


def test_an_exception_reaches_the_shop_at_once_and_the_shop_hands_the_goods_to_another(gw, peers, ids):
    shop, courier, helper = ids("shop"), ids("c"), ids("helper")
    register(gw, shop, {courier: "Feng", helper: "Chen"})
    terminal = watcher(gw, peers, shop)
    phone = peers(gw.port, subscribe=(f"couriers/{courier}/tasks",))
    oid = ids("A")
    terminal.publish("orders/in", shop_order(oid, shop, courier_id=courier))
    phone.publish(f"couriers/{courier}/status", {"order_id": oid, "status": "picked_up"})
    phone.publish(f"couriers/{courier}/status", {"order_id": oid, "status": "exception",
                                                 "reason_code": "damaged", "reason": "vase broke"})
    [event] = events(terminal, shop, oid, "exception")
    assert (event["reason_code"], event["reason"]) == ("damaged", "vase broke")
    [ack] = terminal.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["status"] == "exception")
    assert ack["reason_code"] == "damaged"
    terminal.publish(f"shops/{shop}/commands", {"command": "assign", "order_id": oid, "courier_id": helper})
    [taken] = events(terminal, shop, oid, "assigned", count=2)[1:]
    assert taken["courier_id"] == helper and taken["status"] == "assigned"
    phone.wait_for(f"couriers/{courier}/tasks", lambda t: t["kind"] == "cancel" and t["order_id"] == oid)


def test_a_vehicle_breakdown_is_handed_to_the_courier_nearest_the_broken_one(gw, peers, ids):
    shop, broken, near, far = ids("shop"), ids("broken"), ids("near"), ids("far")
    register(gw, shop, {broken: "Broken", near: "Near", far: "Far"}, assignment="nearest_idle")
    phone = online(gw, peers, broken, 10)
    online(gw, peers, near, 2100)
    online(gw, peers, far, 100)  # nearer the shop, farther from the breakdown
    terminal = watcher(gw, peers, shop)
    oid = ids("A")
    terminal.publish("orders/in", shop_order(oid, shop))
    assert events(terminal, shop, oid, "assigned")[0]["courier_id"] == broken
    phone.publish(f"couriers/{broken}/status", {"order_id": oid, "status": "picked_up"})
    phone.publish(f"couriers/{broken}/gps", at(2000, ago=1))
    phone.publish(f"couriers/{broken}/status", {"order_id": oid, "status": "exception",
                                                "reason_code": "vehicle_breakdown", "reason": "chain"})
    [handed] = events(terminal, shop, oid, "assigned", count=2)[1:]
    assert handed["courier_id"] == near and handed["auto"] is True and handed["status"] == "assigned"


# ---------------------------------------------------------------- 5. changes the courier must confirm


def test_a_change_waits_for_the_couriers_confirmation_and_alerts_if_it_does_not_come(gw, peers, ids):
    shop, courier = ids("shop"), ids("c")
    register(gw, shop, {courier: "He"})
    terminal = watcher(gw, peers, shop)
    phone = peers(gw.port, subscribe=(f"couriers/{courier}/tasks",))
    state = peers(gw.port)
    oid = ids("A")
    terminal.publish("orders/in", shop_order(oid, shop, courier_id=courier))
    phone.wait_for(f"couriers/{courier}/tasks", lambda t: t["kind"] == "assign")
    moved = shop_order(oid, shop, courier_id=courier, address={"text": "Lake Road 1", "lat": 31.3, "lon": 121.5})
    terminal.publish("orders/in", moved)
    [update] = phone.wait_for(f"couriers/{courier}/tasks", lambda t: t["kind"] == "update")
    assert update["confirm_required"] is True
    assert [(c["field"], c["new"]["text"]) for c in update["changes"]] == [("address", "Lake Road 1")]
    events(terminal, shop, oid, "change_pending")
    state.subscribe(f"orders/{oid}/state")
    state.wait_for(f"orders/{oid}/state", lambda s: s["unconfirmed_change"] is True)
    events(terminal, shop, oid, "alert")  # changes.confirm_timeout_seconds is 2 here
    phone.publish(f"couriers/{courier}/receipts", {"msg_ids": [update["msg_id"]], "confirm": True})
    events(terminal, shop, oid, "change_confirmed")
    [ack] = acks(terminal, oid, "change_confirmed")
    assert ack["msg_id"] == update["msg_id"]
    state.wait_for(f"orders/{oid}/state", lambda s: s["unconfirmed_change"] is False)


# ---------------------------------------------------------------- 6. several devices per courier


def test_every_device_gets_the_task_a_receipt_counts_once_and_reads_are_synced(gw, peers, ids):
    shop, courier = ids("shop"), ids("c")
    register(gw, shop, {courier: "Jin"})
    phone = peers(gw.port, subscribe=(f"couriers/{courier}/tasks", f"couriers/{courier}/sync"))
    tablet = peers(gw.port, subscribe=(f"couriers/{courier}/tasks", f"couriers/{courier}/sync"))
    terminal = watcher(gw, peers, shop)
    oid = ids("A")
    terminal.publish("orders/in", shop_order(oid, shop, courier_id=courier))
    [task] = phone.wait_for(f"couriers/{courier}/tasks")
    assert tablet.wait_for(f"couriers/{courier}/tasks")[0]["msg_id"] == task["msg_id"]
    phone.publish(f"couriers/{courier}/receipts", {"msg_ids": [task["msg_id"]]})
    tablet.publish(f"couriers/{courier}/receipts", {"msg_ids": [task["msg_id"]]})
    tablet.publish(f"couriers/{courier}/receipts", {"msg_ids": [task["msg_id"]], "read": True})
    [sync] = phone.wait_for(f"couriers/{courier}/sync")
    assert sync["read"] == [task["msg_id"]]
    acks(terminal, oid, "read_by_courier")
    delivered = terminal.on("ordersys/acks", lambda a: a["order_id"] == oid and a["kind"] == "delivered_to_courier")
    assert len(delivered) == 1


def test_a_shop_may_narrow_the_arriving_geofence(gw, peers, ids):
    shop, courier = ids("shop"), ids("c")
    register(gw, shop, {courier: "Lu"}, arrival_radius_m=100)
    terminal = watcher(gw, peers, shop)
    oid = ids("A")
    terminal.publish("orders/in", shop_order(oid, shop, courier_id=courier, window=None))
    terminal.publish(f"couriers/{courier}/status", {"order_id": oid, "status": "en_route"})
    terminal.publish(f"couriers/{courier}/gps", at(3000 - 300, ago=20))  # inside 500 m, outside this shop's 100 m
    terminal.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["status"] == "en_route")
    terminal.publish(f"couriers/{courier}/gps", at(3000 - 80, ago=10))
    [arriving] = terminal.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["status"] == "arriving")
    assert "within 100 m" in arriving["reason"]
