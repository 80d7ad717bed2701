"""Beyond one machine: bridges on RabbitMQ (its MQTT plugin serving the clients) sharing a PostgreSQL store.

Real servers from Debian's packages (the session's RabbitMQ node and PostgreSQL), real `fieldgate bridge`
processes, real paho clients; an instance is killed with SIGKILL mid-stream.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import DEADLINE, TEST_CONFIG, GatewayProcess, eventually, fix, order

from bench import engines
from gateway.bridge.amqp import PARTITIONS
from gateway.bridge.service import Gateway, Inbound
from gateway.config import Settings
from gateway.errors import StoreBusy
from gateway.store.postgres import StoreCheck, check_store
from gateway.store.queries import Queries
from gateway.store.tables import Store

COURIERS = 4
ORDERS_PER_COURIER = 5
FIXES_PER_ORDER = 6
ORDERS_IN_CLUSTER_RUN = 400
#: What refusing a redelivered older status says: a status message carries no id, so a pickup delivered again after
#: the delivery is refused (an error to the courier, a dead letter) and changes nothing.
STALE = " is already "


def bridges_on(rabbitmq, postgres_url: str, spawn, data: Path) -> Callable[[], GatewayProcess]:
    """Start one more bridge instance on the RabbitMQ node and the shared store (all share one data directory)."""

    def start() -> GatewayProcess:
        return spawn("--engine", rabbitmq.amqp_url, command="bridge", data_dir=data,
                     config={**TEST_CONFIG, "storage": {"url": postgres_url}}, ready="fieldgate bridge ready")

    return start


def store_shows(postgres_url: str, bridges: int) -> StoreCheck:
    """Wait until `bridges` instances run on the store and own every partition between them."""
    return eventually(lambda: (c := check_store(postgres_url, PARTITIONS)).bridges == bridges
                      and c.partitions_owned == PARTITIONS and c, f"{bridges} bridges owning every partition")


@pytest.mark.rabbitmq
def test_two_bridges_share_the_partitions_and_one_killed_mid_stream_loses_and_repeats_nothing(
        rabbitmq, postgres_url, spawn, peers, ids, tmp_path):
    start = bridges_on(rabbitmq, postgres_url, spawn, tmp_path / "data")
    first, second = start(), start()
    store_shows(postgres_url, 2)
    for bridge in (first, second):  # each consumes its share, no partition twice
        bridge.wait_log("partitions changed")

    shop = ids("shop")
    couriers = [ids(f"c{i}") for i in range(COURIERS)]
    orders = {c: [ids(f"{c}-A{j}") for j in range(ORDERS_PER_COURIER)] for c in couriers}
    ordersys = peers(rabbitmq.mqtt_port, subscribe=("ordersys/acks",))
    phones = {c: peers(rabbitmq.mqtt_port, subscribe=(f"couriers/{c}/tasks", f"couriers/{c}/errors"))
              for c in couriers}
    for courier, oids in orders.items():
        for oid in oids:
            ordersys.publish("orders/in", order(order_id=oid, shop_id=shop, courier_id=courier))
    every = {oid for oids in orders.values() for oid in oids}
    ordersys.wait_until(lambda: every <= {a["order_id"] for a in ordersys.on("ordersys/acks")
                                          if a["kind"] == "assigned"}, "every order assigned")

    # The shop marks each order packed; then the stream: each phone confirms its tasks and, order after order,
    # reports fixes, the pickup and the delivery. Halfway through, one instance is killed.
    terminal = peers(rabbitmq.mqtt_port)
    for oid in sorted(every):
        terminal.publish(f"shops/{shop}/commands", {"command": "packed", "order_id": oid})
    ordersys.wait_until(lambda: every <= {a["order_id"] for a in ordersys.on("ordersys/acks")
                                          if a.get("status") == "packed"}, "every order packed")
    sent_fixes: Counter[str] = Counter()
    receipted: Counter[str] = Counter()  # per order, the tasks its courier's phone confirmed
    now = int(time.time())
    steps = []
    for courier, oids in orders.items():
        tasks = phones[courier].wait_for(f"couriers/{courier}/tasks", count=len(oids))
        steps.append((courier, "receipts", {"msg_ids": [t["msg_id"] for t in tasks]}))
        receipted.update(t["order_id"] for t in {t["msg_id"]: t for t in tasks}.values())  # a task re-sent: once
        for j, oid in enumerate(oids):
            for k in range(FIXES_PER_ORDER):
                tst = now - 600 + j * FIXES_PER_ORDER + k
                steps.append((courier, "gps", fix(31.23 + k * 1e-4, 121.47, ago=0) | {"tst": tst}))
                if k == FIXES_PER_ORDER // 2:
                    steps.append((courier, "status", {"order_id": oid, "status": "picked_up"}))
            steps.append((courier, "status", {"order_id": oid, "status": "delivered"}))
    by_courier = [[s for s in steps if s[0] == c] for c in couriers]
    interleaved = [s for group in zip(*by_courier, strict=True) for s in group]  # every courier at once
    for n, (courier, kind, payload) in enumerate(interleaved):
        if n == len(interleaved) // 2:
            first.kill()  # SIGKILL: whatever it had in hand is delivered again, to the survivor
        phones[courier].publish(f"couriers/{courier}/{kind}", payload)
        sent_fixes[courier] += kind == "gps"

    store_shows(postgres_url, 1)  # the survivor took every partition over, and the timers' lease if it was not its
    second.wait_log("this bridge took the lease lease=housekeeping")
    ordersys.wait_until(lambda: every <= {a["order_id"] for a in ordersys.on("ordersys/acks")
                                          if a.get("status") == "delivered"}, "every order delivered",
                        timeout=DEADLINE * 2)

    store = Queries(postgres_url)
    for oid in sorted(every):  # applied exactly once each, in the order each sender sent it
        steps_of = Counter(e["kind"] for e in store.timeline(oid))
        statuses = [e["status"] for e in store.timeline(oid) if e["kind"] == "status"]
        assert [st for st in statuses if st != "arriving"] == ["packed", "picked_up", "delivered"], statuses
        assert statuses.count("arriving") <= 1, statuses  # the geofence's, once at most
        assert steps_of["created"] == steps_of["assigned"] == 1, steps_of
        assert all(STALE in e["reason"] for e in store.timeline(oid) if e["kind"] == "rejected"), store.timeline(oid)
        assert steps_of["delivered_to_courier"] == receipted[oid], steps_of  # one per task confirmed
    for courier in couriers:
        [[stored]] = store.conn.execute("SELECT COUNT(*) FROM gps_fixes WHERE courier_id = ?", (courier,)).fetchall()
        assert stored == sent_fixes[courier]
        assert all(STALE in e["reason"] for e in phones[courier].on(f"couriers/{courier}/errors"))
    dead = [(topic, reason) for topic, reason, oid in store.conn.execute(
        "SELECT topic, reason, order_id FROM dead_letters") if oid in every or shop in topic
        or any(f"/{c}/" in topic for c in couriers)]
    assert all(STALE in reason for _, reason in dead), dead
    acks = Counter((a["order_id"], a["kind"], a.get("status")) for a in ordersys.on("ordersys/acks")
                   if a["order_id"] in every)
    repeated = sum(n - 1 for n in acks.values())
    print(f"{len(interleaved)} messages, one of two bridges killed halfway: {sum(acks.values())} acks, "
          f"{repeated} of them repeats (MQTT's at-least-once); {len(dead)} older statuses delivered again and refused")
    assert all(acks[(oid, "status_changed", "delivered")] >= 1 for oid in every)


@pytest.mark.cluster
def test_on_a_three_node_cluster_the_leaders_node_and_a_bridge_die_and_nothing_is_lost(postgres_server, spawn, peers,
                                                                                        ids, tmp_path):
    """`pytest -m cluster`: three RabbitMQ nodes, three bridges; mid-stream the node holding every partition's leader
    and one bridge are killed (SIGKILL). Every PUBACKed order and fix is applied, once."""
    with engines.rabbitmq(3) as cluster:
        url = engines.new_database(postgres_server, "cluster")
        leader_node, *others = cluster.nodes
        nodes = [arg for node in cluster.nodes for arg in ("--engine", node.amqp_url)]
        bridges = [spawn(*nodes, command="bridge", data_dir=tmp_path / "data", ready="fieldgate bridge ready",
                         config={**TEST_CONFIG, "storage": {"url": url}}) for _ in range(3)]
        eventually(lambda: (c := check_store(url, PARTITIONS)).bridges == 3 and c.partitions_owned == PARTITIONS
                   and c.most_by_one == -(-PARTITIONS // 3), "three bridges sharing every partition")
        assert set(cluster.leaders("fieldgate.inbound.").values()) == {leader_node.name}  # declared from there

        couriers = [ids(f"c{i}") for i in range(6)]
        ordersys = peers(others[0].mqtt_port, subscribe=("ordersys/acks",))
        phones = {c: peers(others[i % 2].mqtt_port) for i, c in enumerate(couriers)}
        published, fixes, killed_at = [], Counter(), 0.0
        for n in range(ORDERS_IN_CLUSTER_RUN):
            if n == ORDERS_IN_CLUSTER_RUN // 2:
                killed_at = time.monotonic()
                cluster.kill(leader_node)
                bridges[0].kill()
            courier = couriers[n % len(couriers)]
            oid = ids(f"O{n}")
            ordersys.publish("orders/in", order(order_id=oid, courier_id=courier))  # returns once PUBACKed
            published.append(oid)
            phones[courier].publish(f"couriers/{courier}/gps", fix(31.23, 121.47) | {"tst": 1_700_000_000 + n})
            fixes[courier] += 1

        def accepted() -> dict[str, float]:
            return {m.json()["order_id"]: m.at for m in ordersys.messages
                    if m.topic == "ordersys/acks" and m.json()["kind"] == "accepted"}

        ordersys.wait_until(lambda: set(published) <= set(accepted()), "every order accepted", timeout=DEADLINE * 3)
        store = Queries(url)
        applied = {r["order_id"] for r in store.query("SELECT order_id FROM orders")}
        created = Counter(r["order_id"] for r in store.query("SELECT order_id FROM order_events WHERE kind = "
                                                             "'created'"))
        stored_fixes = {r["courier_id"]: r["n"] for r in store.query(
            "SELECT courier_id, COUNT(*) AS n FROM gps_fixes GROUP BY courier_id")}
        lost = set(published) - applied
        doubled = [oid for oid in published if created[oid] != 1]
        times = sorted(accepted().values())
        outage = max(b - a for a, b in itertools.pairwise(times))
        after = min(t for t in times if t > killed_at) - killed_at
        acks = Counter((a["order_id"], a["kind"]) for a in ordersys.on("ordersys/acks"))
        repeats = sum(n - 1 for n in acks.values())
        print(f"cluster: {len(published)} orders + {sum(fixes.values())} fixes PUBACKed, "
              f"{len(applied & set(published))} orders applied, {len(lost)} lost, {len(doubled)} applied twice, "
              f"{repeats} repeated acks; longest gap between acks {outage:.2f} s, first ack after the kill "
              f"{after:.2f} s")
        assert not lost and not doubled
        assert all(stored_fixes.get(c, 0) == fixes[c] for c in couriers), (stored_fixes, fixes)


def test_two_instances_changing_the_same_orders_at_once_lose_no_update(postgres_url, tmp_path):
    """Two gateways on one PostgreSQL database, on two threads: one applies the shop's "packed", the other the
    courier's "picked_up", to the same orders at the same time. Each order is held by the transaction that reads it
    until its commit, so the other reads what it wrote: every order ends picked up (a "packed" that comes second is
    refused, as the lifecycle says), and its row agrees with its timeline."""
    settings = Settings(storage={"data_dir": tmp_path})
    first, second = (Gateway(Store(postgres_url), settings) for _ in range(2))
    oids = [f"R{i}" for i in range(60)]
    first.handle_batch([Inbound("orders/in", json.dumps(order(order_id=oid, courier_id="c7")).encode())
                        for oid in oids])
    messages = {first: [Inbound("shops/rose/commands", json.dumps({"command": "packed", "order_id": oid}).encode())
                        for oid in oids],
                second: [Inbound("couriers/c7/status", json.dumps({"order_id": oid, "status": "picked_up"}).encode())
                         for oid in oids]}
    start = threading.Barrier(2)

    conflicts = Counter()

    def apply(gateway: Gateway) -> None:
        start.wait(DEADLINE)
        for i in range(0, len(oids), 5):
            for _ in range(50):  # as the bridge's worker does: a batch that lost a conflict is run again
                try:
                    gateway.handle_batch(messages[gateway][i:i + 5])
                    break
                except StoreBusy:
                    conflicts[gateway] += 1
            else:
                raise AssertionError("a batch conflicted 50 times in a row")

    threads = [threading.Thread(target=apply, args=(g,)) for g in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE)
    store = Queries(postgres_url)
    for oid in oids:
        record = store.get_order(oid)
        statuses = [e["status"] for e in store.timeline(oid) if e["kind"] == "status"]
        assert record is not None and record.status == "picked_up" and statuses[-1] == "picked_up", (oid, statuses)
        assert statuses in (["packed", "picked_up"], ["picked_up"]), (oid, statuses)
    print(f"{sum(conflicts.values())} batches rolled back on a conflict and run again")


def test_work_done_for_all_bridges_is_done_by_the_one_holding_its_lease_and_taken_over_when_it_goes(postgres_url):
    first, second = Store(postgres_url), Store(postgres_url)
    try:
        assert first.leads("housekeeping") and not second.leads("housekeeping")
        assert first.leads("housekeeping") and second.leads("webhooks")  # one lease per kind of work
        first.close()  # its session ends: so does the lease
        assert second.leads("housekeeping")
    finally:
        second.close()
