"""Hostile payloads on every inbound topic of a real gateway: each gets a Rejection and a dead letter,
and a valid order published right after still gets its Ack."""

from __future__ import annotations

import itertools
import json

import pytest
from conftest import Peer, order
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

INBOUND = ["orders/in", "shops/fz/commands", "couriers/fz/status", "couriers/fz/receipts", "couriers/fz/gps",
           "couriers/fz/presence", "owntracks/fz/phone"]
ERRORS = {"orders/in": "ordersys/errors", "shops/fz/commands": "shops/fz/errors"}
_serial = itertools.count()

valid_order = json.dumps(order()).encode()
json_value = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                      max_size=3), max_leaves=8)
hostile = st.one_of(
    st.integers(1, len(valid_order) - 1).map(lambda k: valid_order[:k]),  # truncated
    st.integers(300, 20_000).map(lambda n: b"[" * n + b"]" * n),  # deeply nested
    st.integers(300, 5_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.binary(min_size=1, max_size=64).map(lambda b: b"\xff" + b),  # not UTF-8
    st.text(min_size=1, max_size=30).map(lambda t: f'{{"order_id": "{t}"\u202e\u0000'.encode("utf-8", "replace")),
    st.integers(70_000, 200_000).map(lambda n: b'{"notes": "' + b"\xe2\x80\x8b" * (n // 3) + b'"}'),  # huge
    st.sampled_from(sorted(order())).flatmap(  # one field of a valid order with a wrong-typed value
        lambda key: json_value.filter(lambda v, k=key: not isinstance(v, type(order()[k])) or v in ([], {}, ""))
        .map(lambda v, k=key: json.dumps({**order(), k: v}).encode())
    ),
    json_value.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),  # not an object
)


@pytest.fixture(scope="module")
def fuzzer(gateway):
    peer = Peer(gateway.port, subscribe=("ordersys/acks", "ordersys/errors", "couriers/fz/errors", "shops/fz/errors"))
    yield peer
    peer.close()


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(topic=st.sampled_from(INBOUND), payload=hostile)
def test_hostile_payload_is_rejected_dead_lettered_and_the_next_order_still_acked(gateway, fuzzer, topic, payload):
    errors_topic = ERRORS.get(topic, "couriers/fz/errors")
    before = len(fuzzer.on(errors_topic, lambda r: r["topic"] == topic))
    fuzzer.publish(topic, payload)
    good = f"FZ-{next(_serial)}"
    fuzzer.publish("orders/in", order(order_id=good, shop_id="fz", courier_id=None))
    fuzzer.wait_for("ordersys/acks", lambda a: a["order_id"] == good and a["kind"] == "accepted")

    fuzzer.wait_for(errors_topic, lambda r: r["topic"] == topic, count=before + 1)
    [[count]] = gateway.queries.conn.execute(
        "SELECT COUNT(*) FROM dead_letters WHERE topic = ? AND size = ?", [topic, len(payload)]).fetchall()
    assert count >= 1
