"""The bridge is an ordinary MQTT client: the same flow against Debian's mosquitto and the embedded broker,
and a bridge killed with SIGKILL loses nothing that its broker holds for it."""

from __future__ import annotations

import pytest
from conftest import order

from gateway.store.queries import Queries
from gateway.store.tables import db_path


def run_flow(port: int, peers, ids) -> None:
    """Order → shop + courier task → receipt → delivered ack → status → status ack."""
    oid, shop, courier = ids("A"), ids("shop"), ids("c")
    ordersys = peers(port, subscribe=("ordersys/acks",))
    terminal = peers(port, subscribe=(f"shops/{shop}/orders",))
    phone = peers(port, subscribe=(f"couriers/{courier}/tasks",))

    ordersys.publish("orders/in", order(order_id=oid, shop_id=shop, courier_id=courier))
    ordersys.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["kind"] == "accepted")
    terminal.wait_for(f"shops/{shop}/orders", lambda e: e["kind"] == "created")
    [task] = phone.wait_for(f"couriers/{courier}/tasks")
    phone.publish(f"couriers/{courier}/receipts", {"msg_ids": [task["msg_id"]]})
    ordersys.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["kind"] == "delivered_to_courier")
    phone.publish(f"couriers/{courier}/status", {"order_id": oid, "status": "picked_up"})
    ordersys.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["status"] == "picked_up")


@pytest.mark.mosquitto
def test_flow_through_bridge_on_mosquitto(mosquitto, spawn, peers, ids):
    spawn("--broker", f"mqtt://127.0.0.1:{mosquitto}", command="bridge", ready="fieldgate bridge ready")
    run_flow(mosquitto, peers, ids)


def test_flow_through_embedded_broker(gateway, peers, ids):
    run_flow(gateway.port, peers, ids)


def test_flow_through_embedded_broker_with_the_bridge_as_a_loopback_mqtt_client(spawn, peers, ids):
    gw = spawn(config={"bridge": {"in_process": False}})
    gw.wait_log("bridge connected broker=mqtt://127.0.0.1")
    run_flow(gw.port, peers, ids)


@pytest.mark.mosquitto
def test_killed_bridge_loses_nothing_its_broker_queued(mosquitto, spawn, peers, ids, tmp_path):
    """The bridge's session is persistent and it PUBACKs only after committing: orders published while it is
    dead, or in flight when it is SIGKILLed, are all in SQLite after it comes back."""
    url = f"mqtt://127.0.0.1:{mosquitto}"
    data = tmp_path / "bridge-data"
    bridge = spawn("--broker", url, command="bridge", data_dir=data, ready="fieldgate bridge ready")
    ordersys = peers(mosquitto, subscribe=("ordersys/acks",))
    wanted = [ids(f"K{i}") for i in range(300)]

    for oid in wanted[:150]:
        ordersys.publish("orders/in", order(order_id=oid, courier_id=None))
    bridge.kill()  # SIGKILL, probably mid-batch
    for oid in wanted[150:]:
        ordersys.publish("orders/in", order(order_id=oid, courier_id=None))

    spawn("--broker", url, command="bridge", data_dir=data, ready="fieldgate bridge ready")
    def accepted() -> list[str]:
        return [a["order_id"] for a in ordersys.on("ordersys/acks", lambda a: a["kind"] == "accepted")]

    ordersys.wait_until(lambda: set(accepted()) == set(wanted), "an accepted ack for every order", timeout=60)
    print(f"{len(wanted)} orders, {len(accepted()) - len(wanted)} duplicate acks after SIGKILL")
    store = Queries(db_path(data))
    assert store.db.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == len(wanted)
