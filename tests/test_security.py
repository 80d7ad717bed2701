"""Users, roles, the topic ACL, listeners and limits: real `fieldgate serve --no-anonymous`, real clients."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from conftest import (
    DEADLINE,
    PASSWORD,
    GatewayProcess,
    Peer,
    add_user,
    fieldgate,
    launch,
    not_started,
    order,
    raw_connect,
    recv_exactly,
    store_config,
)

from gateway.broker.codec import encode_publish

USERS = {  # name: (role, id)
    "c7-phone": ("courier", "c7"),
    "rose-terminal": ("shop", "rose"),
    "erp": ("ordersys", None),
    "ops": ("operator", None),
}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def secure(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[GatewayProcess]:
    """One gateway, on each store, that demands credentials everywhere, with a user of each role."""
    gw = launch(tmp_path_factory.mktemp("secure"), "--no-anonymous",
                config={"broker": {"max_publish_rate": 0}, **store_config(request, "secure")})
    for name, (role, user_id) in USERS.items():
        add_user(gw, name, role, user_id)
    yield gw
    gw.kill()


def login(port: int, name: str, **kw) -> Peer:
    return Peer(port, auth=(name, PASSWORD), **kw)


def test_users_are_stored_hashed_listed_without_hashes_and_changed_or_removed(tmp_path, on_store):
    gw = not_started(tmp_path / "data", on_store)
    add_user(gw, "alice", "courier", "c1")
    assert gw.cli("users", "add", "alice", "--role", "courier", "--password-stdin", stdin="x\n").returncode == 1
    listed = gw.cli("users", "list").stdout
    assert "alice" in listed and "courier" in listed and "pbkdf2" not in listed and PASSWORD not in listed
    [stored] = gw.queries.query("SELECT password_hash FROM users")
    assert stored["password_hash"].startswith("$pbkdf2-sha512$100000$") and PASSWORD not in stored["password_hash"]
    assert gw.cli("users", "passwd", "alice", "--password-stdin", stdin="another\n").returncode == 0
    assert gw.queries.query("SELECT password_hash FROM users") != [stored]
    gw.kill()  # closes its reader of the store
    assert gw.cli("users", "remove", "alice").returncode == 0
    assert "no users yet" in gw.cli("users", "list").stdout
    bad = gw.cli("users", "add", "bob", "--role", "admin", "--password-stdin", stdin="x\n")
    assert bad.returncode == 1 and "unknown role 'admin'" in bad.stderr


@pytest.mark.parametrize(
    ("username", "password"),
    [("c7-phone", "wrong"), ("nobody", PASSWORD), (None, None), ("c7-phone", None)],
    ids=["wrong-password", "unknown-user", "anonymous", "no-password"],
)
def test_bad_credentials_get_connack_not_authorized(secure, username, password):
    sock, connack = raw_connect(secure.port, "intruder", username=username, password=password)
    sock.close()
    assert connack == b"\x20\x02\x00\x05"


def test_passwords_never_reach_the_log(secure):
    login(secure.port, "c7-phone").close()
    raw_connect(secure.port, "x", username="c7-phone", password="wrong-guess")[0].close()
    secure.wait_log("refused connection: not authorized")
    assert not any(PASSWORD in line or "wrong-guess" in line for line in secure.lines)


def test_anonymous_is_refused_on_a_listener_that_is_not_loopback(spawn, tmp_path):
    gw = spawn(config={"mqtt": {"host": "0.0.0.0"}})  # reached here via 127.0.0.1 only
    sock, connack = raw_connect(gw.port, "anon")
    sock.close()
    assert connack == b"\x20\x02\x00\x05"
    add_user(gw, "erp", "ordersys")
    ok, connack = raw_connect(gw.port, "erp-1", username="erp", password=PASSWORD)
    ok.close()
    assert connack == b"\x20\x02\x00\x00"


PUBLISH_CANDIDATES = [
    "orders/in", "couriers/c7/status", "couriers/c7/receipts", "couriers/c7/gps", "couriers/c7/presence",
    "couriers/c8/status", "couriers/c7/tasks", "owntracks/c7/phone", "owntracks/c7/phone/event", "owntracks/c8/phone",
    "shops/rose/commands", "shops/tulip/commands", "shops/rose/open/get", "shops/tulip/open/get", "shops/rose/orders",
    "ordersys/acks", "orders/A1/state", "operator/commands", "misc/topic", "$fieldgate/devices/c7", "$SYS/x",
    "couriers/c7/chat/in", "couriers/c8/chat/in", "couriers/c7/chat/read", "couriers/c7/media/A1/proof_of_delivery",
    "couriers/c8/media/A1/chat", "shops/rose/chat/in", "shops/tulip/chat/in", "shops/rose/media/A1/packed",
    "shops/rose/chat/history/get", "ordersys/chat/in", "ordersys/ratings/in", "ordersys/chat/history/get",
    "customers/A1/chat", "couriers/c7/orders/get", "couriers/c8/orders/get", "shops/rose/state/get",
    "shops/tulip/state/get",
]
SUBSCRIBE_CANDIDATES = [
    "couriers/c7/tasks", "couriers/c7/errors", "couriers/c8/tasks", "couriers/+/tasks", "couriers/c7/#",
    "couriers/c7/status", "shops/rose/orders", "shops/rose/errors", "shops/rose/open", "shops/tulip/open",
    "shops/tulip/orders", "shops/+/orders", "orders/+/state", "orders/#", "ordersys/acks", "ordersys/#",
    "ordersys/errors", "operator/errors", "#", "$SYS/#", "owntracks/+/+", "couriers/c7/orders", "couriers/c8/orders",
    "couriers/c7/sync", "couriers/c7/chat", "couriers/c7/chat/history", "couriers/c7/media/ack", "couriers/c8/chat",
    "shops/rose/chat", "shops/tulip/chat", "shops/rose/media/ack", "ordersys/notices", "customers/+/notices",
    "customers/A1/chat", "customers/+/chat",
]
ALLOWED_PUBLISH = {
    "c7-phone": {"couriers/c7/status", "couriers/c7/receipts", "couriers/c7/gps", "couriers/c7/presence",
                 "owntracks/c7/phone", "owntracks/c7/phone/event", "couriers/c7/chat/in", "couriers/c7/chat/read",
                 "couriers/c7/media/A1/proof_of_delivery", "couriers/c7/orders/get"},
    "rose-terminal": {"shops/rose/state/get", "shops/rose/commands", "shops/rose/open/get", "shops/rose/chat/in",
                      "shops/rose/media/A1/packed",
                      "shops/rose/chat/history/get"},
    "erp": {"orders/in", "ordersys/chat/in", "ordersys/ratings/in", "ordersys/chat/history/get"},
    "ops": {"operator/commands"},
}
ALLOWED_SUBSCRIBE = {
    "c7-phone": {"couriers/c7/tasks", "couriers/c7/errors", "couriers/c7/orders", "couriers/c7/sync",
                 "couriers/c7/chat", "couriers/c7/chat/history", "couriers/c7/media/ack"},
    "rose-terminal": {"shops/rose/orders", "shops/rose/errors", "shops/rose/open", "orders/+/state", "shops/rose/chat",
                      "shops/rose/media/ack"},
    "erp": {"ordersys/acks", "ordersys/#", "ordersys/errors", "ordersys/notices", "customers/+/notices",
            "customers/A1/chat", "customers/+/chat"},
    "ops": set(SUBSCRIBE_CANDIDATES),
}


@pytest.mark.parametrize("user", list(USERS))
def test_acl_matrix_every_allowed_and_every_denied_pair(secure, user):
    observer = login(secure.port, "ops", subscribe=("#", "$SYS/#"))
    client = login(secure.port, user)
    granted = client.subscribe(*SUBSCRIBE_CANDIDATES)
    assert {f for f, code in zip(SUBSCRIBE_CANDIDATES, granted, strict=True) if code != 128} == ALLOWED_SUBSCRIBE[user]
    probe = f"acl-{user}"
    for topic in PUBLISH_CANDIDATES:
        client.publish(topic, {"probe": probe})  # denied ones are PUBACKed too (3.1.1 has no NACK) and dropped
    erp = login(secure.port, "erp")
    erp.publish("orders/in", {"probe": f"{probe}-end"})
    observer.wait_for("orders/in", lambda m: m.get("probe") == f"{probe}-end")
    routed = {m.topic for m in observer.messages if m.payload == f'{{"probe": "{probe}"}}'.encode()}
    assert routed == ALLOWED_PUBLISH[user]
    denied = len(PUBLISH_CANDIDATES) - len(ALLOWED_PUBLISH[user]) + len(SUBSCRIBE_CANDIDATES) - len(
        ALLOWED_SUBSCRIBE[user])
    if denied:
        secure.wait_log("refused: ")


def test_a_shop_sees_only_its_own_orders_state(secure):
    shop = login(secure.port, "rose-terminal", subscribe=("orders/+/state", "shops/rose/orders"))
    erp = login(secure.port, "erp", subscribe=("ordersys/acks",))
    erp.publish("orders/in", order(order_id="SEC-T1", shop_id="tulip"))
    erp.publish("orders/in", order(order_id="SEC-R1", shop_id="rose"))
    erp.wait_for("ordersys/acks", lambda a: a["order_id"] in ("SEC-T1", "SEC-R1"), count=2)
    shop.wait_for("orders/SEC-R1/state")
    shop.wait_for("shops/rose/orders", lambda e: e["order_id"] == "SEC-R1")
    assert not [m for m in shop.messages if "SEC-T1" in m.topic]


def test_full_flow_with_credentials_only(secure):
    """The acceptance setting: --no-anonymous, every party a user of its role."""
    phone = login(secure.port, "c7-phone", subscribe=("couriers/c7/tasks",))
    erp = login(secure.port, "erp", subscribe=("ordersys/acks",))
    erp.publish("orders/in", order(order_id="SEC-F1", courier_id="c7"))
    [task] = phone.wait_for("couriers/c7/tasks", lambda t: t["order_id"] == "SEC-F1")
    phone.publish("couriers/c7/receipts", {"msg_ids": [task["msg_id"]]})
    phone.publish("couriers/c7/status", {"order_id": "SEC-F1", "status": "picked_up"})
    erp.wait_for("ordersys/acks", lambda a: a["order_id"] == "SEC-F1" and a["kind"] == "delivered_to_courier")
    erp.wait_for("ordersys/acks", lambda a: a["order_id"] == "SEC-F1" and a["status"] == "picked_up")


def test_tls_and_websocket_listeners_carry_mqtt(spawn, tmp_path, peers):
    assert fieldgate("certs", "dev", "--dir", str(tmp_path / "certs")).returncode == 0
    gw = spawn(config={"tls": {"enabled": True, "port": 0, "certfile": str(tmp_path / "certs" / "cert.pem"),
                               "keyfile": str(tmp_path / "certs" / "key.pem")},
                       "websocket": {"enabled": True, "port": 0}},
               ready=r"fieldgate ready mqtt=\S+ tls=\S+ ws=\S+")
    line = gw.wait_log("fieldgate ready")
    tls_port = int(re.search(r"tls=[^ ]*:(\d+)", line).group(1))
    ws_port = int(re.search(r"ws=[^ ]*:(\d+)", line).group(1))
    browser = peers(ws_port, transport="websockets", subscribe=("shops/rose/orders",))
    erp = peers(tls_port, tls_ca=tmp_path / "certs" / "cert.pem", subscribe=("ordersys/acks",))
    erp.publish("orders/in", order(order_id="TLS-1"))
    erp.wait_for("ordersys/acks", lambda a: a["order_id"] == "TLS-1")
    browser.wait_for("shops/rose/orders", lambda e: e["order_id"] == "TLS-1")
    sock, connack = raw_connect(tls_port, "plain-on-tls")  # no TLS handshake: not an MQTT session
    assert connack != b"\x20\x02\x00\x00"
    sock.close()


def test_topic_limits_refuse_long_and_deep_topics(spawn, peers):
    gw = spawn(config={"broker": {"max_topic_length": 32, "max_topic_levels": 4}})
    observer = peers(gw.port, subscribe=("a/#",))
    client = peers(gw.port, "limits-client")
    assert client.subscribe("a/" + "x" * 40, "a/b/c/d/e", "a/b") == [128, 128, 1]
    client.publish("a/" + "y" * 40, {"n": 1})
    client.publish("a/b/c/d/e", {"n": 2})
    client.publish("a/b", {"n": 3})
    observer.wait_for("a/b")
    assert [m.topic for m in observer.messages] == ["a/b"]
    gw.wait_log("refused: topic longer than broker.max_topic_length (32 bytes)")


def test_connections_beyond_max_connections_get_server_unavailable(spawn, peers):
    gw = spawn(config={"broker": {"max_connections": 2}})  # the in-process bridge holds no socket
    peers(gw.port, "one")
    peers(gw.port, "two")
    sock, connack = raw_connect(gw.port, "three")
    sock.close()
    assert connack == b"\x20\x02\x00\x03"
    gw.wait_log("server unavailable: broker.max_connections (2) reached")


def test_a_flooding_client_is_throttled_and_others_are_not(spawn, peers):
    gw = spawn(config={"broker": {"max_publish_rate": 20, "publish_burst": 5}})
    for name, user_id in (("flood", "cf"), ("calm", "cc")):
        add_user(gw, name, "courier", user_id)
    observer = peers(gw.port, subscribe=("couriers/+/presence",))
    flood = peers(gw.port, auth=("flood", PASSWORD))
    calm = peers(gw.port, auth=("calm", PASSWORD))
    for n in range(60):  # QoS 0: all sent at once; the broker reads them at 20/s
        flood.client.publish("couriers/cf/presence", f'{{"online": true, "n": {n}}}', qos=0)
    gw.wait_log("throttling a client over broker.max_publish_rate")
    calm.publish("couriers/cc/presence", {"online": True})
    observer.wait_for("couriers/cc/presence")
    flooded = observer.on("couriers/cf/presence")
    assert len(flooded) < 60, "the calm courier waited behind the whole flood"
    observer.wait_for("couriers/cf/presence", count=60, timeout=DEADLINE)  # throttled, not dropped


def test_phone_numbers_are_masked_in_log_lines():
    import logging

    from gateway.logs import ContextFormatter, mask_phones

    assert mask_phones("call +8613800000000 now") == "call +861********00 now"
    assert mask_phones("tst=1763780000 order=A1001") == "tst=1763780000 order=A1001"  # not phone numbers
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "recipient %s", ("+44 20 7946 0958",), None)
    record.ctx = {"phone": "+8613800000000"}
    line = ContextFormatter().format(record)
    assert "7946 0958" not in line and "13800000000" not in line


def test_no_log_line_of_a_real_run_carries_a_customer_phone(gateway, peers, ids):
    client = peers(gateway.port, subscribe=("ordersys/acks", "ordersys/errors"))
    phone = "+8613912345678"
    good, bad = ids("PH"), ids("PHX")
    client.publish("orders/in", order(order_id=good, recipient={"name": "Wang", "phone": phone}))
    client.publish("orders/in", order(order_id=bad, recipient={"name": "Wang", "phone": phone + "x"}))
    client.wait_for("ordersys/acks", lambda a: a["order_id"] == good)
    client.wait_for("ordersys/errors", lambda r: r["order_id"] == bad)
    assert not any("13912345678" in line for line in gateway.lines)


def test_purge_removes_personal_data_of_ended_orders_and_old_raw_payloads(spawn, peers, on_store):
    gw = spawn(config=on_store)
    client = peers(gw.port, subscribe=("ordersys/acks", "ordersys/errors", "couriers/c7/tasks"))
    client.publish("orders/in", order(order_id="OLD-1"))
    client.publish("orders/in", order(order_id="OPEN-1"))
    client.publish("orders/in", b'{"order_id": "DEAD-1", "recipient": {"phone": "+8613800000000"}')
    client.publish("couriers/c7/gps", {"_type": "location", "lat": 1, "lon": 2, "tst": 5})
    client.publish("couriers/c7/status", {"order_id": "OLD-1", "status": "delivered"})
    client.wait_for("ordersys/acks", lambda a: a["order_id"] == "OLD-1" and a["kind"] == "status_changed")
    client.wait_for("ordersys/errors")

    done = gw.cli("orders", "purge", "--before", "2099-01-01")
    assert done.returncode == 0
    assert "purged 1 orders (with 0 chat messages and 0 uploads), 1 dead-letter payloads, 1 GPS fixes" in done.stdout
    db = gw.queries.conn
    old = db.execute("SELECT order_json FROM orders WHERE order_id = 'OLD-1'").fetchone()[0]
    assert "Li Na" not in old and "8613800000000" not in old and "Sunshine" not in old and "[purged]" in old
    assert "Li Na" in db.execute("SELECT order_json FROM orders WHERE order_id = 'OPEN-1'").fetchone()[0]
    assert b"Li Na" not in b"".join(bytes(r[0]) for r in db.execute(
        "SELECT payload FROM tasks WHERE order_id = 'OLD-1'"))
    assert db.execute("SELECT COUNT(*) FROM dead_letters WHERE payload IS NOT NULL").fetchone()[0] == 0
    timeline = gw.cli("orders", "show", "OLD-1").stdout
    assert "delivered" in timeline and "Li Na" not in timeline


def test_a_packet_over_max_packet_bytes_closes_only_that_connection(spawn, peers):
    gw = spawn(config={"broker": {"max_packet_bytes": 4096}})
    bystander = peers(gw.port, subscribe=("big/ok",))
    sock, _ = raw_connect(gw.port, "too-big")
    sock.sendall(encode_publish("big/x", b"x" * 10_000, 0, False, False, None))
    assert recv_exactly(sock, 1) == b""
    sock.close()
    gw.wait_log("exceeds broker.max_packet_bytes (4096)")
    peers(gw.port).publish("big/ok", {"still": "serving"})
    bystander.wait_for("big/ok")
