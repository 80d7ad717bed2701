"""End to end on the embedded broker: real `fieldgate serve`, real paho clients, its tables in a real SQLite file and
in a real PostgreSQL database (every test runs on both)."""

from __future__ import annotations

from conftest import Peer, barrier, fix, order, raw_connect


def test_order_is_stored_acked_and_routed_to_shop_courier_and_retained_state(gateway, peers, ids):
    oid, shop, courier = ids("A"), ids("shop"), ids("c")
    ordersys = peers(gateway.port, subscribe=("ordersys/acks",))
    terminal = peers(gateway.port, subscribe=(f"shops/{shop}/orders",))
    phone = peers(gateway.port, subscribe=(f"couriers/{courier}/tasks",))

    ordersys.publish("orders/in", order(order_id=oid, shop_id=shop, courier_id=courier))

    accepted, assigned = ordersys.wait_for("ordersys/acks", lambda a: a["order_id"] == oid, count=2)
    assert accepted["kind"] == "accepted" and accepted["duplicate"] is False
    assert assigned["kind"] == "assigned" and assigned["courier_id"] == courier
    kinds = [e["kind"] for e in terminal.wait_for(f"shops/{shop}/orders", count=2)]
    assert kinds == ["created", "assigned"]
    [task] = phone.wait_for(f"couriers/{courier}/tasks")
    assert task["kind"] == "assign" and task["order_id"] == oid and task["msg_id"]
    assert task["order"]["recipient"]["name"] == "Li Na" and task["order"]["status"] == "assigned"

    late = peers(gateway.port, subscribe=(f"orders/{oid}/state",))
    [state] = late.wait_for(f"orders/{oid}/state")
    assert state["status"] == "assigned" and state["courier_id"] == courier and state["location"] is None
    assert any(m.retain for m in late.messages if m.topic == f"orders/{oid}/state")

    record = gateway.queries.get_order(oid)
    assert record is not None and record.order.recipient.phone == "+8613800000000"


def test_republished_order_creates_nothing_twice_and_is_acked_as_a_duplicate(gateway, peers, ids):
    oid, shop, courier = ids("A"), ids("shop"), ids("c")
    ordersys = peers(gateway.port, subscribe=("ordersys/acks",))
    terminal = peers(gateway.port, subscribe=(f"shops/{shop}/orders",))
    phone = peers(gateway.port, subscribe=(f"couriers/{courier}/tasks",))
    payload = order(order_id=oid, shop_id=shop, courier_id=courier)

    ordersys.publish("orders/in", payload)
    ordersys.publish("orders/in", payload)
    # A later status change proves both copies were processed before we count.
    phone.wait_for(f"couriers/{courier}/tasks")
    phone.publish(f"couriers/{courier}/status", {"order_id": oid, "status": "picked_up"})
    ordersys.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["kind"] == "status_changed")
    terminal.wait_for(f"shops/{shop}/orders", lambda e: e["kind"] == "status")  # its own connection: may lag

    first, again = ordersys.on("ordersys/acks", lambda a: a["order_id"] == oid and a["kind"] == "accepted")
    assert (first["duplicate"], again["duplicate"]) == (False, True)  # a retrying order system hears back
    assert again["status"] == "assigned" and again["courier_id"] == courier
    assert len(phone.on(f"couriers/{courier}/tasks")) == 1
    assert [e["kind"] for e in terminal.on(f"shops/{shop}/orders")] == ["created", "assigned", "status"]
    timeline = [e["kind"] for e in gateway.queries.timeline(oid)]
    assert timeline == ["created", "assigned", "status"]


def test_order_update_and_reassignment_reach_the_right_couriers(gateway, peers, ids):
    oid, shop, c1, c2 = ids("A"), ids("shop"), ids("c1"), ids("c2")
    ordersys = peers(gateway.port, subscribe=("ordersys/acks",))
    first = peers(gateway.port, subscribe=(f"couriers/{c1}/tasks",))
    second = peers(gateway.port, subscribe=(f"couriers/{c2}/tasks",))

    ordersys.publish("orders/in", order(order_id=oid, shop_id=shop, courier_id=c1))
    first.wait_for(f"couriers/{c1}/tasks", lambda t: t["kind"] == "assign")
    ordersys.publish("orders/in", order(order_id=oid, shop_id=shop, courier_id=c1, notes="ring twice"))
    [update] = first.wait_for(f"couriers/{c1}/tasks", lambda t: t["kind"] == "update")
    assert update["order"]["notes"] == "ring twice"

    ordersys.publish("orders/in", order(order_id=oid, shop_id=shop, courier_id=c2, notes="ring twice"))
    first.wait_for(f"couriers/{c1}/tasks", lambda t: t["kind"] == "cancel")
    [assign] = second.wait_for(f"couriers/{c2}/tasks", lambda t: t["kind"] == "assign")
    assert assign["order"]["courier_id"] == c2
    ordersys.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["kind"] == "accepted", count=3)


def test_receipt_acks_delivered_to_courier_and_read(gateway, peers, ids):
    oid, shop, courier = ids("A"), ids("shop"), ids("c")
    ordersys = peers(gateway.port, subscribe=("ordersys/acks",))
    phone = peers(gateway.port, subscribe=(f"couriers/{courier}/tasks",))
    ordersys.publish("orders/in", order(order_id=oid, shop_id=shop, courier_id=courier))
    [task] = phone.wait_for(f"couriers/{courier}/tasks")

    phone.publish(f"couriers/{courier}/receipts", {"msg_ids": [task["msg_id"]]})
    [ack] = ordersys.wait_for("ordersys/acks", lambda a: a["kind"] == "delivered_to_courier" and a["order_id"] == oid)
    assert ack["msg_id"] == task["msg_id"] and ack["courier_id"] == courier

    phone.publish(f"couriers/{courier}/receipts", {"msg_ids": [task["msg_id"]], "read": True})
    ordersys.wait_for("ordersys/acks", lambda a: a["kind"] == "read_by_courier" and a["order_id"] == oid)
    delivered = ordersys.on("ordersys/acks", lambda a: a["kind"] == "delivered_to_courier" and a["order_id"] == oid)
    assert len(delivered) == 1


def test_task_without_receipt_is_resent_with_same_msg_id_while_courier_is_connected(gateway, peers, ids):
    oid, shop, courier = ids("A"), ids("shop"), ids("c")
    ordersys = peers(gateway.port, subscribe=("ordersys/acks",))
    phone = peers(gateway.port, subscribe=(f"couriers/{courier}/tasks", f"couriers/{courier}/errors"))
    phone.publish(f"couriers/{courier}/presence", {"online": True}, retain=True)

    ordersys.publish("orders/in", order(order_id=oid, shop_id=shop, courier_id=courier))
    first, again = phone.wait_for(f"couriers/{courier}/tasks", count=2)  # retry is 1 s in TEST_CONFIG
    assert again["msg_id"] == first["msg_id"]

    phone.publish(f"couriers/{courier}/receipts", {"msg_ids": [first["msg_id"]]})
    ordersys.wait_for("ordersys/acks", lambda a: a["kind"] == "delivered_to_courier" and a["order_id"] == oid)
    phone.publish(f"couriers/{courier}/presence", {"online": False}, retain=True)


def test_status_updates_move_the_order_and_illegal_ones_are_rejected(gateway, peers, ids):
    oid, shop, courier = ids("A"), ids("shop"), ids("c")
    ordersys = peers(gateway.port, subscribe=("ordersys/acks",))
    terminal = peers(gateway.port, subscribe=(f"shops/{shop}/orders", f"orders/{oid}/state"))
    phone = peers(gateway.port, subscribe=(f"couriers/{courier}/tasks", f"couriers/{courier}/errors"))
    ordersys.publish("orders/in", order(order_id=oid, shop_id=shop, courier_id=courier))
    phone.wait_for(f"couriers/{courier}/tasks")

    for status in ("picked_up", "arriving", "delivered"):  # forward moves may skip en_route
        phone.publish(f"couriers/{courier}/status", {"order_id": oid, "status": status})
        ordersys.wait_for("ordersys/acks", lambda a, s=status: a["kind"] == "status_changed" and a["status"] == s
                          and a["order_id"] == oid)
        terminal.wait_for(f"shops/{shop}/orders", lambda e, s=status: e["kind"] == "status" and e["status"] == s)
        terminal.wait_for(f"orders/{oid}/state", lambda st, s=status: st["status"] == s)

    phone.publish(f"couriers/{courier}/status", {"order_id": oid, "status": "picked_up"})
    [rejection] = phone.wait_for(f"couriers/{courier}/errors")
    assert "delivered" in rejection["reason"] and rejection["topic"] == f"couriers/{courier}/status"
    assert rejection["order_id"] == oid
    assert gateway.queries.get_order(oid).status == "delivered"


def test_other_couriers_cannot_move_an_order(gateway, peers, ids):
    oid, shop, courier, thief = ids("A"), ids("shop"), ids("c"), ids("x")
    ordersys = peers(gateway.port, subscribe=("ordersys/acks",))
    other = peers(gateway.port, subscribe=(f"couriers/{thief}/errors",))
    ordersys.publish("orders/in", order(order_id=oid, shop_id=shop, courier_id=courier))
    ordersys.wait_for("ordersys/acks", lambda a: a["order_id"] == oid)

    other.publish(f"couriers/{thief}/status", {"order_id": oid, "status": "delivered"})
    [rejection] = other.wait_for(f"couriers/{thief}/errors")
    assert courier in rejection["reason"] and thief in rejection["reason"]


def test_shop_commands_assign_pack_and_cancel(gateway, peers, ids):
    oid, shop, courier = ids("A"), ids("shop"), ids("c")
    ordersys = peers(gateway.port, subscribe=("ordersys/acks",))
    terminal = peers(gateway.port, subscribe=(f"shops/{shop}/orders", f"shops/{shop}/errors"))
    phone = peers(gateway.port, subscribe=(f"couriers/{courier}/tasks",))
    ordersys.publish("orders/in", order(order_id=oid, shop_id=shop, courier_id=None))
    terminal.wait_for(f"shops/{shop}/orders", lambda e: e["kind"] == "created" and e["status"] == "created")

    terminal.publish(f"shops/{shop}/commands", {"command": "assign", "order_id": oid, "courier_id": courier})
    phone.wait_for(f"couriers/{courier}/tasks", lambda t: t["kind"] == "assign")
    terminal.publish(f"shops/{shop}/commands", {"command": "packed", "order_id": oid})
    phone.wait_for(f"couriers/{courier}/tasks", lambda t: t["kind"] == "ready_for_pickup")
    ordersys.wait_for("ordersys/acks", lambda a: a["kind"] == "status_changed" and a["status"] == "packed")
    terminal.publish(f"shops/{shop}/commands", {"command": "cancel", "order_id": oid, "reason": "customer called"})
    phone.wait_for(f"couriers/{courier}/tasks", lambda t: t["kind"] == "cancel")
    [ack] = ordersys.wait_for("ordersys/acks", lambda a: a["kind"] == "status_changed" and a["status"] == "cancelled")
    assert ack["reason"] == "customer called"

    terminal.publish(f"shops/{ids('other')}/commands", {"command": "packed", "order_id": oid})
    terminal.publish(f"shops/{shop}/commands", {"command": "assign", "order_id": oid})
    [missing] = terminal.wait_for(f"shops/{shop}/errors")
    assert "courier_id" in missing["reason"]


def test_gps_fixes_are_stored_and_the_newest_by_tst_is_retained_and_copied_to_orders(gateway, peers, ids):
    oid, shop, courier = ids("A"), ids("shop"), ids("c")
    ordersys = peers(gateway.port, subscribe=("ordersys/acks",))
    ordersys.publish("orders/in", order(order_id=oid, shop_id=shop, courier_id=courier))
    ordersys.wait_for("ordersys/acks", lambda a: a["order_id"] == oid)
    watch = (f"couriers/{courier}/location", f"orders/{oid}/state", f"couriers/{courier}/errors")
    phone = peers(gateway.port, subscribe=watch)

    newer = fix(31.2310, 121.4740, ago=100, acc=5, batt=80)
    older = fix(31.0, 121.0, ago=200)
    phone.publish(f"couriers/{courier}/gps", newer)
    [loc] = phone.wait_for(f"couriers/{courier}/location")
    assert (loc["lat"], loc["lon"], loc["tst"], loc["batt"]) == (31.2310, 121.4740, newer["tst"], 80)
    phone.wait_for(f"orders/{oid}/state", lambda st: st["location"] and st["location"]["tst"] == newer["tst"])

    phone.publish(f"owntracks/{courier}/phone", {**older, "tid": "c7", "vel": 18, "inregions": ["shop"]})
    phone.publish(f"owntracks/{courier}/phone", {"_type": "transition", "event": "enter", "tst": 1})
    barrier(phone, courier)
    assert len(phone.on(f"couriers/{courier}/location")) == 1
    assert all(st["location"] is None or st["location"]["tst"] == newer["tst"]
               for st in phone.on(f"orders/{oid}/state"))
    late = peers(gateway.port, subscribe=(f"couriers/{courier}/location",))
    assert late.wait_for(f"couriers/{courier}/location")[0]["tst"] == newer["tst"]
    store = gateway.queries
    rows = store.query("SELECT tst, device FROM gps_fixes WHERE courier_id = ? ORDER BY tst", [courier])
    assert rows == [{"tst": older["tst"], "device": "phone"}, {"tst": newer["tst"], "device": "gps"}]


def test_persistent_courier_gets_tasks_published_while_it_was_offline(gateway, peers, ids):
    shop, courier = ids("shop"), ids("c")
    phone = Peer(gateway.port, f"phone-{courier}", clean_session=False, subscribe=(f"couriers/{courier}/tasks",))
    phone.close()
    ordersys = peers(gateway.port, subscribe=("ordersys/acks",))
    wanted = {ids(f"A{i}") for i in range(5)}
    for oid in sorted(wanted):
        ordersys.publish("orders/in", order(order_id=oid, shop_id=shop, courier_id=courier))
    ordersys.wait_for("ordersys/acks", lambda a: a["order_id"] in wanted, count=len(wanted))

    back = peers(gateway.port, f"phone-{courier}", clean_session=False)
    tasks = back.wait_for(f"couriers/{courier}/tasks", count=len(wanted))
    assert back.session_present is True
    assert {t["order_id"] for t in tasks} == wanted


def test_owntracks_last_will_marks_courier_offline(gateway, peers, ids):
    courier = ids("c")
    phone = peers(gateway.port)
    phone.publish(f"owntracks/{courier}/phone", {"_type": "location", "lat": 1.0, "lon": 2.0, "tst": 100})
    phone.publish(f"owntracks/{courier}/phone", {"_type": "lwt", "tst": 101})
    gateway.wait_log(f"courier presence courier_id={courier} online=False")


def test_serve_stops_cleanly_on_sigint_and_sigterm(spawn):
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        gw = spawn()
        assert gw.stop(sig) == 0
        assert gw.log_has("stopped")


def test_shops_see_their_courier_go_offline_and_come_back(gateway, peers, ids):
    oid, shop, courier = ids("A"), ids("shop"), ids("c")
    terminal = peers(gateway.port, subscribe=(f"shops/{shop}/orders",))
    terminal.publish("orders/in", order(order_id=oid, shop_id=shop, courier_id=courier))
    terminal.wait_for(f"shops/{shop}/orders", lambda e: e["kind"] == "assigned")
    will = (f"couriers/{courier}/presence", b'{"online": false}', 1, True)
    phone, _ = raw_connect(gateway.port, ids("phone"), will=will)
    peers(gateway.port).publish(f"couriers/{courier}/presence", {"online": True}, retain=True)
    phone.close()  # the phone drops out of coverage: its will says offline

    [gone] = terminal.wait_for(f"shops/{shop}/orders", lambda e: e["kind"] == "courier_offline")
    assert gone["courier_id"] == courier and gone["order_id"] == oid
    peers(gateway.port).publish(f"couriers/{courier}/gps", {"_type": "location", "lat": 1, "lon": 2, "tst": 9})
    terminal.wait_for(f"shops/{shop}/orders", lambda e: e["kind"] == "courier_online")
    kinds = [e["kind"] for e in gateway.queries.timeline(oid)]
    assert "courier_offline" in kinds and kinds.index("courier_offline") < kinds.index("courier_online")
