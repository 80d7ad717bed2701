"""The embedded broker behaves as an MQTT 3.1.1 broker for any client (the interoperability suite's areas)."""

from __future__ import annotations

import threading

import pytest
from conftest import DEADLINE, GatewayProcess, Peer, raw_connect, recv_exactly, run_flow

from gateway.broker.codec import encode_publish, remaining_length


@pytest.fixture
def gateway(sqlite_gateway: GatewayProcess) -> GatewayProcess:
    """The shared gateway on one store: these are the broker's rules, the same wherever the bridge keeps its tables."""
    return sqlite_gateway


def marker(publisher: Peer, listener: Peer, topic: str) -> None:
    """Publish to `topic` (which `listener` subscribes) and wait for it: everything sent before has been routed."""
    before = len(listener.on(topic))
    publisher.publish(topic, {"marker": before})
    listener.wait_for(topic, count=before + 1)


def test_basic_publish_subscribe_at_each_qos(gateway, peers, ids):
    topic = f"conf/{ids('basic')}"
    sub = peers(gateway.port)
    assert sub.subscribe(topic, qos=2) == [2]
    pub = peers(gateway.port)
    for qos in (0, 1, 2):
        pub.publish(topic, {"qos": qos}, qos=qos)
    sub.wait_for(topic, count=3)
    assert [(m.json()["qos"], m.qos) for m in sub.messages] == [(0, 0), (1, 1), (2, 2)]


def test_retained_messages_are_delivered_on_subscribe_and_cleared_by_an_empty_one(gateway, peers, ids):
    base = f"conf/{ids('ret')}"
    pub = peers(gateway.port)
    for qos in (0, 1, 2):
        pub.publish(f"{base}/{qos}", {"qos": qos}, qos=qos, retain=True)
    sub = peers(gateway.port, subscribe=(f"{base}/+",))
    sub.wait_until(lambda: len(sub.messages) == 3, "three retained messages")
    assert all(m.retain for m in sub.messages)
    for qos in (0, 1, 2):
        pub.publish(f"{base}/{qos}", b"", qos=1, retain=True)
    late = peers(gateway.port, subscribe=(f"{base}/+", f"{base}-marker"))
    marker(pub, late, f"{base}-marker")
    assert [m.topic for m in late.messages] == [f"{base}-marker"]


def test_persistent_session_queues_qos1_and_qos2_while_offline_but_not_qos0(gateway, peers, ids):
    topic, client_id = f"conf/{ids('offline')}", ids("offline-client")
    Peer(gateway.port, client_id, clean_session=False, subscribe=(topic,)).close()
    pub = peers(gateway.port)
    for qos in (0, 1, 2):
        pub.publish(topic, {"qos": qos}, qos=qos)
    back = peers(gateway.port, client_id, clean_session=False)
    back.wait_for(topic, count=2)
    assert back.session_present is True
    assert sorted(m.json()["qos"] for m in back.messages) == [1, 2]


def test_overlapping_subscriptions_deliver_one_copy_at_the_highest_qos(gateway, peers, ids):
    base = f"conf/{ids('overlap')}"
    sub = peers(gateway.port)
    sub.subscribe(f"{base}/#", qos=2)
    sub.subscribe(f"{base}/+", qos=1)
    pub = peers(gateway.port)
    pub.publish(f"{base}/x", {"n": 1}, qos=2)
    marker(pub, sub, f"{base}/done/marker")  # matches only base/#
    copies = [m for m in sub.messages if m.topic == f"{base}/x"]
    assert len(copies) == 1 and copies[0].qos == 2


def test_unsubscribe_stops_delivery_of_that_filter_only(gateway, peers, ids):
    base = f"conf/{ids('unsub')}"
    sub = peers(gateway.port, subscribe=(f"{base}/a", f"{base}/b"))
    done = threading.Event()
    sub.client.on_unsubscribe = lambda *args: done.set()
    sub.client.unsubscribe(f"{base}/a")
    assert done.wait(DEADLINE), "no UNSUBACK"
    pub = peers(gateway.port)
    pub.publish(f"{base}/a", {"n": 1})
    marker(pub, sub, f"{base}/b")
    assert [m.topic for m in sub.messages] == [f"{base}/b"]


def test_wildcards_at_the_first_level_do_not_match_dollar_topics(gateway, peers, ids):
    name = ids("dollar")
    everything = peers(gateway.port, subscribe=("#", f"conf/{name}"))
    explicit = peers(gateway.port, subscribe=(f"$fg/{name}",))
    pub = peers(gateway.port)
    pub.publish(f"$fg/{name}", {"n": 1})
    explicit.wait_for(f"$fg/{name}")
    marker(pub, everything, f"conf/{name}")
    assert not [m for m in everything.messages if m.topic.startswith("$")]


def test_zero_length_client_id_is_accepted_only_with_a_clean_session(gateway):
    sock, connack = raw_connect(gateway.port, "", clean=True)
    sock.close()
    assert connack == b"\x20\x02\x00\x00"
    sock, connack = raw_connect(gateway.port, "", clean=False)
    sock.close()
    assert connack == b"\x20\x02\x00\x02"  # identifier rejected [MQTT-3.1.3-8]


def test_will_is_published_when_the_connection_drops_but_not_after_disconnect(gateway, peers, ids):
    topic = f"conf/{ids('will')}"
    watcher = peers(gateway.port, subscribe=(topic,))
    sock, _ = raw_connect(gateway.port, ids("dropper"), will=(topic, b'{"gone": "dropped"}', 1, False))
    sock.close()  # no DISCONNECT
    watcher.wait_for(topic, lambda m: m["gone"] == "dropped")

    polite, _ = raw_connect(gateway.port, ids("polite"), will=(topic, b'{"gone": "polite"}', 1, False))
    polite.sendall(b"\xe0\x00")  # DISCONNECT
    polite.close()
    pub = peers(gateway.port)
    marker(pub, watcher, topic)
    assert not watcher.on(topic, lambda m: m.get("gone") == "polite")


def test_a_second_connection_with_the_same_client_id_takes_over(gateway, peers, ids):
    client_id = ids("twin")
    first, _ = raw_connect(gateway.port, client_id)
    second, connack = raw_connect(gateway.port, client_id)
    assert connack == b"\x20\x02\x00\x00"
    assert first.recv(1) == b""  # the broker closed the first connection
    first.close()
    second.close()


def test_invalid_topic_filters_get_suback_failure_and_the_rest_are_granted(gateway, ids):
    sock, _ = raw_connect(gateway.port, ids("filters"))
    body = b"\x00\x07" + b"".join(
        len(f).to_bytes(2, "big") + f + b"\x01" for f in (b"conf/ok/#", b"conf/bad/#/x", b"conf/bad+")
    )
    sock.sendall(b"\x82" + remaining_length(len(body)) + body)
    assert recv_exactly(sock, 7) == b"\x90\x05\x00\x07\x01\x80\x80"
    sock.close()


def test_protocol_violations_close_only_that_connection(gateway, peers, ids):
    topic = f"conf/{ids('victim')}"
    bystander = peers(gateway.port, subscribe=(topic,))
    for bad in (
        b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00",  # a second CONNECT
        b"\x30\xff\xff\xff\xff\x7f",  # remaining length longer than 4 bytes
        encode_publish("a/+/wild", b"x", 0, False, False, None),  # wildcard in a topic name
        b"\x32\x05\x00\x02\xc3\x28\x00",  # topic that is not UTF-8
        b"\x82\x04\x00\x01\x00\x00",  # SUBSCRIBE without a QoS byte
    ):
        sock, connack = raw_connect(gateway.port, ids("rude"))
        assert connack == b"\x20\x02\x00\x00"
        sock.sendall(bad)
        assert recv_exactly(sock, 1) == b"", f"connection survived {bad!r}"
        sock.close()
    pub = peers(gateway.port)
    pub.publish(topic, {"still": "serving"})
    bystander.wait_for(topic)


def test_nobody_can_take_over_the_embedded_bridges_session(gateway, peers, ids):
    sock, connack = raw_connect(gateway.port, "fieldgate-bridge", clean=False)
    sock.close()
    assert connack == b"\x20\x02\x00\x02"  # identifier rejected
    run_flow(gateway.port, peers, ids)  # the embedded bridge still works
