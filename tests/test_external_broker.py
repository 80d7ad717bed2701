"""The bridge is an ordinary MQTT client: the same flow against Debian's mosquitto and the embedded broker,
and on RabbitMQ (its MQTT plugin serving the clients, the bridge consuming over AMQP); a bridge killed with
SIGKILL loses nothing that its broker holds for it."""

from __future__ import annotations

import json

import pytest
from conftest import fieldgate, free_port, order, run_flow
from hypothesis import given
from hypothesis import strategies as st

from gateway.bridge.amqp import PARTITIONS, mqtt_topic, routing_key
from gateway.store.queries import Queries
from gateway.store.schema import SCHEMA_VERSION
from gateway.store.tables import db_path


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


@pytest.mark.rabbitmq
def test_flow_through_bridge_on_rabbitmq(rabbitmq, spawn, peers, ids):
    bridge = spawn("--engine", rabbitmq.amqp_url, command="bridge", ready="fieldgate bridge ready")
    bridge.wait_log("bridge connected to RabbitMQ")
    run_flow(rabbitmq.mqtt_port, peers, ids)


@pytest.mark.rabbitmq
def test_cluster_check_shows_each_node_the_bridges_partitions_and_the_store(rabbitmq_cluster, rabbitmq, postgres_url,
                                                                            spawn, tmp_path):
    bridge = spawn("--engine", rabbitmq.amqp_url, command="bridge", ready="fieldgate bridge ready",
                   config={"storage": {"url": postgres_url}})
    bridge.wait_log("partitions changed")
    queues = json.loads(rabbitmq_cluster.ctl("list_queues", "name", "type", "durable", "arguments", "--formatter",
                                             "json", "--quiet"))
    inbound = sorted((q for q in queues if q["name"].startswith("fieldgate.inbound.")), key=lambda q: q["name"])
    assert [q["name"] for q in inbound] == [f"fieldgate.inbound.{n}" for n in range(PARTITIONS)]
    for queue in inbound:  # durable quorum queues, one consumer at a time: order per order and courier
        assert queue["type"] == "quorum" and queue["durable"], queue
        assert ["x-single-active-consumer", "bool", True] in queue["arguments"], queue
    host = rabbitmq.amqp_url.split("@")[1].split("/")[0]
    nodes = [rabbitmq.amqp_url, f"amqp://guest:guest@{host}/empty", f"amqp://guest:wrong@{host}/%2F",
             f"amqp://guest:guest@127.0.0.1:{free_port()}/"]
    done = fieldgate("cluster", "check", *(arg for node in nodes for arg in ("--engine", node)),
                     "--store", postgres_url, "--json")
    assert done.returncode == 1, done.stderr
    served, empty, refused, down, store = (json.loads(line) for line in done.stdout.splitlines())
    assert served["reachable"] and served["partitions"] == PARTITIONS and served["idle"] == 0, served
    assert served["consumers"] == PARTITIONS and served["backlog"] >= 0 and served["problem"] is None
    assert "a long secret" not in served["node"]
    assert empty["reachable"] and empty["partitions"] == 0 and "start one" in empty["problem"]
    assert not refused["reachable"] and "login refused" in refused["problem"]
    assert not down["reachable"] and "Connection refused" in down["problem"]
    assert store["reachable"] and store["bridges"] == 1 and store["partitions_owned"] == PARTITIONS, store
    assert store["schema_version"] == SCHEMA_VERSION and store["problem"] is None
    table = fieldgate("cluster", "check", "--engine", rabbitmq.amqp_url, "--store", postgres_url, columns=80)
    assert table.returncode == 0, table.stdout + table.stderr
    assert "RabbitMQ nodes" in table.stdout and "PostgreSQL store" in table.stdout
    bridge.kill()  # its partitions and its slot go with its connection
    gone = fieldgate("cluster", "check", "--engine", rabbitmq.amqp_url, "--store", postgres_url, "--json")
    node, store = (json.loads(line) for line in gone.stdout.splitlines())
    assert gone.returncode == 1 and node["idle"] == PARTITIONS and "no bridge" in node["problem"]
    assert store["bridges"] == 0 and store["partitions_owned"] == 0
    unreachable = f"postgresql://fieldgate:secret@127.0.0.1:{free_port()}/nowhere"
    down = fieldgate("cluster", "check", "--engine", rabbitmq.amqp_url, "--store", unreachable, "--json")
    *_, store = (json.loads(line) for line in down.stdout.splitlines())
    assert down.returncode == 1 and not store["reachable"] and "secret" not in json.dumps(store)


@pytest.mark.rabbitmq
def test_on_rabbitmq_a_phone_asks_for_its_active_orders_since_nothing_is_retained(rabbitmq, spawn, peers, ids):
    bridge = spawn("--engine", rabbitmq.amqp_url, command="bridge", ready="fieldgate bridge ready")
    bridge.wait_log("bridge connected to RabbitMQ")
    oid, courier = ids("A"), ids("c")
    ordersys = peers(rabbitmq.mqtt_port, subscribe=("ordersys/acks",))
    ordersys.publish("orders/in", order(order_id=oid, courier_id=courier))
    ordersys.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["kind"] == "assigned")
    phone = peers(rabbitmq.mqtt_port, subscribe=(f"couriers/{courier}/orders", f"couriers/{courier}/errors"))
    phone.publish(f"couriers/{courier}/orders/get", {})
    [mine] = phone.wait_for(f"couriers/{courier}/orders")
    assert [o["order_id"] for o in mine["orders"]] == [oid]
    assert len(phone.on(f"couriers/{courier}/orders")) == 1  # RabbitMQ kept no retained list: only the answer


def killed_bridge_loses_nothing(engine: tuple[str, str], port: int, spawn, peers, ids, tmp_path) -> None:
    """Orders published while the bridge is dead, or in flight when it is SIGKILLed, are all in SQLite after it
    comes back: its broker holds them until the bridge acknowledges them, after its commit."""
    data = tmp_path / "bridge-data"
    bridge = spawn(*engine, command="bridge", data_dir=data, ready="fieldgate bridge ready")
    ordersys = peers(port, subscribe=("ordersys/acks",))
    wanted = [ids(f"K{i}") for i in range(300)]

    for oid in wanted[:150]:
        ordersys.publish("orders/in", order(order_id=oid, courier_id=None))
    bridge.kill()  # SIGKILL, probably mid-batch
    for oid in wanted[150:]:
        ordersys.publish("orders/in", order(order_id=oid, courier_id=None))

    spawn(*engine, command="bridge", data_dir=data, ready="fieldgate bridge ready")

    def accepted() -> list[str]:
        return [a["order_id"] for a in ordersys.on("ordersys/acks", lambda a: a["kind"] == "accepted")]

    ordersys.wait_until(lambda: set(accepted()) == set(wanted), "an accepted ack for every order", timeout=60)
    print(f"{len(wanted)} orders, {len(accepted()) - len(wanted)} duplicate acks after SIGKILL")
    store = Queries(db_path(data))
    assert store.conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == len(wanted)


@pytest.mark.mosquitto
def test_killed_bridge_loses_nothing_mosquitto_queued(mosquitto, spawn, peers, ids, tmp_path):
    killed_bridge_loses_nothing(("--broker", f"mqtt://127.0.0.1:{mosquitto}"), mosquitto, spawn, peers, ids, tmp_path)


@pytest.mark.rabbitmq
def test_killed_bridge_loses_nothing_rabbitmq_queued(rabbitmq, spawn, peers, ids, tmp_path):
    killed_bridge_loses_nothing(("--engine", rabbitmq.amqp_url), rabbitmq.mqtt_port, spawn, peers, ids, tmp_path)


@given(st.lists(st.text(st.characters(blacklist_characters="/+#*\x00", blacklist_categories=("Cs",)), max_size=8),
                min_size=1, max_size=6))
def test_an_mqtt_topic_and_its_rabbitmq_routing_key_translate_both_ways(levels):
    topic = "/".join(levels)
    key = routing_key(topic)
    assert key.split(".") == [level.replace(".", "/") for level in levels]  # RabbitMQ's MQTT plugin swaps / and .
    assert mqtt_topic(key) == topic


def test_bridge_filters_become_rabbitmq_binding_patterns():
    assert routing_key("couriers/+/gps") == "couriers.*.gps"
    assert routing_key("orders/+/chat/#") == "orders.*.chat.#"


@pytest.mark.parametrize(("args", "said"), [
    (["--engine", "http://127.0.0.1:5672/"], "unsupported engine URL scheme 'http'"),
    (["--engine", "amqp:///vhost"], "has no host"),
    (["--engine", "amqp://guest:guest@127.0.0.1:99999/"], "has a bad port"),
    (["--broker", "mqtt://127.0.0.1:1883", "--engine", "amqp://127.0.0.1/"], "either --broker"),
    ([], "either --broker"),
])
def test_bridge_refuses_a_bad_broker_or_engine_with_what_to_do(args, said, tmp_path):
    done = fieldgate("bridge", *args, "--data-dir", str(tmp_path), "--http-port", "0")
    assert done.returncode != 0 and said in done.stderr, done.stderr


def test_bridge_on_unreachable_rabbitmq_nodes_keeps_trying_each_and_says_so(spawn):
    nodes = [f"amqp://guest:guest@127.0.0.1:{free_port()}/" for _ in range(2)]
    bridge = spawn("--engine", nodes[0], "--engine", nodes[1], command="bridge", ready="HTTP listening")
    for node in nodes:  # each logged without its password
        line = bridge.wait_log(f"node={node.replace('guest:guest@', 'guest@')}")
        assert "RabbitMQ node unreachable or lost" in line and "guest:guest" not in line
