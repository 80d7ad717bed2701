"""The gateway core on a real store (a SQLite file and a PostgreSQL database), without a broker: retries,
presence, outbox, fuzzing."""

from __future__ import annotations

import json

from conftest import order
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.bridge.service import Gateway, Inbound
from gateway.config import BridgeSettings, Settings, StorageSettings
from gateway.store.queries import Queries
from gateway.store.tables import Store


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def make(store_at, tmp_path, retry: float = 30.0) -> tuple[Gateway, Clock]:
    clock = Clock()
    store = Store(store_at)
    settings = Settings(bridge=BridgeSettings(task_retry_seconds=retry), storage=StorageSettings(data_dir=tmp_path))
    return Gateway(store, settings, clock=clock), clock


def send(gw: Gateway, topic: str, payload) -> list:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return [m for _, m in gw.handle_batch([Inbound(topic, raw)])]


def test_tasks_are_resent_after_the_timeout_only_while_the_courier_is_online(store_at, tmp_path):
    gw, clock = make(store_at, tmp_path, retry=30)
    [task_msg] = [m for m in send(gw, "orders/in", order()) if m.topic == "couriers/c7/tasks"]
    clock.now += 31
    assert gw.due_resends() == []  # never heard from c7: its broker session queues the task
    send(gw, "couriers/c7/presence", {"online": True})
    [again] = gw.due_resends()
    assert again.payload == task_msg.payload  # same msg_id, same bytes
    assert gw.due_resends() == []  # rescheduled
    clock.now += 31
    send(gw, "couriers/c7/presence", {"online": False})
    assert gw.due_resends() == []
    send(gw, "couriers/c7/gps", {"_type": "location", "lat": 1, "lon": 2, "tst": 5})  # heard from: online
    assert len(gw.due_resends()) == 1
    msg_id = json.loads(task_msg.payload)["msg_id"]
    send(gw, "couriers/c7/receipts", {"msg_ids": [msg_id]})
    clock.now += 31
    assert gw.due_resends() == []


def test_a_newer_task_supersedes_the_unreceived_older_one(store_at, tmp_path):
    gw, clock = make(store_at, tmp_path, retry=10)
    send(gw, "couriers/c7/presence", {"online": True})
    send(gw, "orders/in", order())
    [update] = [m for m in send(gw, "orders/in", order(notes="gate code 4711")) if m.topic == "couriers/c7/tasks"]
    clock.now += 11
    assert [m.payload for m in gw.due_resends()] == [update.payload]


def test_every_outbound_message_is_in_the_outbox_until_acknowledged(store_at, tmp_path):
    gw, _ = make(store_at, tmp_path)
    rows = gw.handle_batch([Inbound("orders/in", json.dumps(order()).encode())])
    assert [row for row in gw.store.pending_outbox()] == rows
    with gw.store.transaction():
        gw.store.delete_outbox([i for i, _ in rows])
    assert gw.store.pending_outbox() == []


def test_a_batch_is_one_transaction_and_a_bad_message_spoils_nothing_else(store_at, tmp_path):
    gw, _ = make(store_at, tmp_path)
    batch = [Inbound("orders/in", json.dumps(order(order_id=f"B{i}")).encode()) for i in range(3)]
    batch.insert(1, Inbound("orders/in", b"garbage"))
    out = [m.topic for _, m in gw.handle_batch(batch)]
    assert out.count("ordersys/errors") == 1
    stats = Queries(store_at).stats()
    assert stats["orders"] == 3 and stats["dead_letters"] == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
topics = st.sampled_from(
    ["orders/in", "shops/rose/commands", "couriers/c7/status", "couriers/c7/receipts", "couriers/c7/gps",
     "couriers/c7/presence", "owntracks/c7/phone"]
)
payloads = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({}, optional={k: json_values for k in order()}).map(lambda d: json.dumps(d).encode()),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(topic=topics, payload=payloads)
def test_any_payload_on_any_inbound_topic_is_handled_or_rejected_never_raised(store_at, tmp_path, topic, payload):
    gw, _ = make(store_at, tmp_path)
    try:
        out = send(gw, topic, payload)
        rejected = [m for m in out if m.topic.endswith("/errors")]
        if rejected:
            body = json.loads(rejected[0].payload)
            assert body["reason"] and body["topic"] == topic
    finally:
        gw.store.close()
    reasons = [json.loads(m.payload)["reason"] for m in out if m.topic.endswith("/errors")]
    assert not any("internal error" in r for r in reasons)
