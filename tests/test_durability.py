"""Durability of the embedded broker: real gateway processes, SIGKILL, restarts, real paho clients."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing

from conftest import Peer, fieldgate, order, raw_connect, recv_exactly

from gateway.store.queries import Queries
from gateway.store.tables import db_path

FAST = {"broker": {"retry_interval_seconds": 1}, "bridge": {"task_retry_seconds": 60}}


def retained_on(port: int, topic_filter: str, count: int, peers) -> list[Peer]:
    watcher = peers(port, subscribe=(topic_filter,))
    watcher.wait_until(lambda: len([m for m in watcher.messages if m.retain]) >= count,
                       f"{count} retained messages on {topic_filter}")
    return watcher


def test_courier_gets_every_task_after_sigkill_without_subscribing_again(spawn, peers):
    gw = spawn(config=FAST)
    courier = "c-durable"
    Peer(gw.port, "phone-durable", clean_session=False, subscribe=(f"couriers/{courier}/tasks",)).close()
    ordersys = peers(gw.port, subscribe=("ordersys/acks",))
    wanted = {f"D{i:03d}" for i in range(200)}
    for oid in sorted(wanted):
        ordersys.publish("orders/in", order(order_id=oid, courier_id=courier))
    ordersys.wait_for("ordersys/acks", lambda a: a["kind"] == "accepted", count=200, timeout=60)

    gw.kill()  # SIGKILL
    gw = spawn(config=FAST)

    phone = peers(gw.port, "phone-durable", clean_session=False)  # no SUBSCRIBE this time
    tasks = phone.wait_for(f"couriers/{courier}/tasks", count=200, timeout=60)
    assert phone.session_present is True
    assert {t["order_id"] for t in tasks} == wanted
    watcher = retained_on(gw.port, "orders/+/state", 200, peers)
    states = {m.json()["order_id"] for m in watcher.messages if m.retain}
    assert wanted <= states


def test_unacked_message_comes_back_with_dup_while_connected_and_after_reconnect_but_not_once_acked(spawn, peers):
    gw = spawn(config=FAST)
    publisher = peers(gw.port)
    slow = Peer(gw.port, "slow-reader", clean_session=False, subscribe=("t/redeliver",), auto_ack=False)
    publisher.publish("t/redeliver", {"n": 1})
    slow.wait_until(lambda: len(slow.messages) >= 2, "the retry while connected (1 s)")
    first, again = slow.messages[:2]
    assert (first.dup, again.dup) == (False, True) and again.payload == first.payload
    slow.close()  # gone without PUBACK

    back = peers(gw.port, "slow-reader", clean_session=False)  # acknowledges this time
    [msg] = back.wait_for("t/redeliver")
    assert msg == {"n": 1} and back.messages[0].dup is True
    back.close()

    assert gw.stop() == 0
    gw = spawn(config=FAST)
    later = peers(gw.port, "slow-reader", clean_session=False)
    peers(gw.port).publish("t/redeliver", {"n": 2})
    later.wait_for("t/redeliver", lambda m: m["n"] == 2)
    assert [m.json()["n"] for m in later.messages] == [2]


def test_retained_messages_survive_sigkill_and_reach_only_matching_subscribers_at_min_qos(spawn, peers):
    gw = spawn()
    publisher = peers(gw.port)
    publisher.publish("r/a", {"v": 1}, qos=1, retain=True)
    publisher.publish("r/b", {"v": 2}, qos=0, retain=True)
    publisher.publish("r/c", {"v": 3}, qos=1, retain=True)
    publisher.publish("r/c", b"", qos=1, retain=True)  # clears r/c
    peers(gw.port, subscribe=("r/+",)).wait_for("r/b")  # someone else's subscription to r/+ exists now

    gw.kill()
    gw = spawn()
    bystander = peers(gw.port, subscribe=("elsewhere/#",))
    viewer = peers(gw.port, subscribe=("r/+",))
    viewer.wait_until(lambda: len(viewer.messages) >= 2, "two retained messages")
    got = {m.topic: m for m in viewer.messages}
    assert set(got) == {"r/a", "r/b"} and all(m.retain for m in got.values())
    assert (got["r/a"].qos, got["r/b"].qos) == (1, 0)
    publisher = peers(gw.port)
    publisher.publish("elsewhere/marker", {"m": 1})
    bystander.wait_for("elsewhere/marker")
    assert [m.topic for m in bystander.messages] == ["elsewhere/marker"]  # no retained r/* leaked to it


def test_forwarding_qos_is_the_lower_of_publish_and_subscription(sqlite_gateway, peers, ids):
    topic = f"q/{ids('t')}"
    low = peers(sqlite_gateway.port)
    low.subscribe(topic, qos=0)
    high = peers(sqlite_gateway.port, subscribe=(topic,))
    publisher = peers(sqlite_gateway.port)
    publisher.publish(topic, {"n": 0}, qos=0)
    publisher.publish(topic, {"n": 1}, qos=1)
    high.wait_for(topic, count=2)
    low.wait_for(topic, count=2)
    assert [m.qos for m in high.messages] == [0, 1]
    assert [m.qos for m in low.messages] == [0, 0]
    assert not any(m.retain for m in high.messages)


def test_silent_client_is_dropped_after_one_and_a_half_keepalives_and_its_will_is_published(sqlite_gateway, peers, ids):
    courier = ids("ck")
    watcher = peers(sqlite_gateway.port, subscribe=(f"couriers/{courier}/presence",))
    will = (f"couriers/{courier}/presence", b'{"online": false}', 1, True)
    sock, connack = raw_connect(sqlite_gateway.port, ids("silent"), keepalive=1, will=will)
    assert connack == b"\x20\x02\x00\x00"
    try:
        [presence] = watcher.wait_for(f"couriers/{courier}/presence")  # no PINGREQ ever: cut after 1.5 s
        assert presence == {"online": False}
        assert sock.recv(1) == b""  # the broker closed the connection
    finally:
        sock.close()
    sqlite_gateway.wait_log(f"courier presence courier_id={courier} online=False")


def test_a_couriers_presence_is_offline_after_a_gateway_crash(spawn, peers):
    gw = spawn()
    courier = "c-presence"
    phone = Peer(gw.port, "phone-presence", will=(f"couriers/{courier}/presence", b'{"online": false}', True))
    phone.publish(f"couriers/{courier}/presence", {"online": True}, retain=True)
    gw.wait_log(f"courier presence courier_id={courier} online=True")

    gw.kill()  # the phone's connection dies with the gateway; nobody published its will
    phone.close()
    gw = spawn()
    watcher = retained_on(gw.port, f"couriers/{courier}/presence", 1, peers)
    assert watcher.messages[0].json() == {"online": False}
    gw.wait_log(f"courier presence courier_id={courier} online=False")
    out = fieldgate("couriers", "list", "--data-dir", str(gw.data_dir)).stdout
    line = next(line for line in out.splitlines() if courier in line)
    assert " no " in line


def test_full_queue_rejects_new_messages_counted_logged_and_shown(spawn, peers):
    gw = spawn(config={"broker": {"max_queued_messages": 5}})
    Peer(gw.port, "queue-bound", clean_session=False, subscribe=("bound/#",)).close()
    publisher = peers(gw.port)
    for n in range(8):
        publisher.publish("bound/x", {"n": n})
    gw.wait_log("queue full: dropped the newest message")
    report = fieldgate("sessions", "--json", "--data-dir", str(gw.data_dir)).stdout
    report = [json.loads(line) for line in report.splitlines()]
    [row] = [r for r in report if r["client_id"] == "queue-bound"]
    assert row["clean"] is False and row["dropped"] == 3
    back = peers(gw.port, "queue-bound", clean_session=False)
    back.wait_for("bound/x", count=5)
    publisher.publish("bound/x", {"n": 99})
    back.wait_for("bound/x", lambda m: m["n"] == 99)
    assert [m.json()["n"] for m in back.messages] == [0, 1, 2, 3, 4, 99]


def test_full_queue_can_drop_the_oldest_instead(spawn, peers):
    gw = spawn(config={"broker": {"max_queued_messages": 5, "queue_full_policy": "drop_oldest"}})
    Peer(gw.port, "queue-oldest", clean_session=False, subscribe=("old/#",)).close()
    publisher = peers(gw.port)
    for n in range(8):
        publisher.publish("old/x", {"n": n})
    gw.wait_log("queue full: dropped the oldest message")
    back = peers(gw.port, "queue-oldest", clean_session=False)
    back.wait_for("old/x", count=5)
    assert [m.json()["n"] for m in back.messages] == [3, 4, 5, 6, 7]


def test_sessions_of_clients_gone_too_long_expire(spawn, peers):
    gw = spawn(config={"broker": {"session_expiry_seconds": 1}})
    Peer(gw.port, "gone-for-good", clean_session=False, subscribe=("exp/#",)).close()
    gw.wait_log("session expired client_id=gone-for-good")
    back = peers(gw.port, "gone-for-good", clean_session=False)
    assert back.session_present is False


def test_corrupt_or_foreign_databases_are_moved_aside_and_the_gateway_starts(spawn, tmp_path, peers):
    import sqlite3

    data = tmp_path / "data"
    data.mkdir()
    (data / "broker.db").write_bytes(b"this is not a database" * 100)
    foreign = sqlite3.connect(data / "fieldgate.db")
    foreign.execute("CREATE TABLE invoices (id INTEGER)")
    foreign.commit()
    foreign.close()
    assert fieldgate("db", "check", "--data-dir", str(data)).returncode == 1

    gw = spawn()
    assert gw.log_has("broker.db is unusable") and gw.log_has("fieldgate.db is unusable")
    assert len(list(data.glob("broker.db.bad-*"))) == 1 and len(list(data.glob("fieldgate.db.bad-*"))) == 1
    ordersys = peers(gw.port, subscribe=("ordersys/acks",))
    ordersys.publish("orders/in", order())
    ordersys.wait_for("ordersys/acks")
    assert "ok" in fieldgate("db", "check", "--data-dir", str(data)).stdout
    assert Queries(db_path(data)).get_order("A1001") is not None


def test_db_vacuum_compacts_both_files(spawn, tmp_path):
    gw = spawn()
    assert gw.stop() == 0
    before = {}
    for name in ("fieldgate.db", "broker.db"):  # 2 MB of pages left free, as a purge leaves them
        with closing(sqlite3.connect(gw.data_dir / name)) as conn:
            conn.execute("CREATE TABLE ballast (b BLOB)")
            conn.executemany("INSERT INTO ballast VALUES (?)", [(bytes(4000),)] * 500)
            conn.commit()
            conn.execute("DROP TABLE ballast")
            conn.commit()
        before[name] = (gw.data_dir / name).stat().st_size
    out = fieldgate("db", "vacuum", "--data-dir", str(gw.data_dir)).stdout
    for name, size in before.items():
        after = (gw.data_dir / name).stat().st_size
        assert after < size - 1_000_000, f"{name} was not compacted: {size:,} → {after:,} bytes"
        assert f"{name}: {size:,} → {after:,} bytes" in out


def test_db_check_and_vacuum_with_a_postgresql_store_look_after_broker_db_and_point_at_postgresql(
        spawn, postgres_url):
    gw = spawn(config={"storage": {"url": postgres_url}})
    assert gw.stop() == 0
    checked = gw.cli("db", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "the tables are in PostgreSQL" in checked.stdout and "broker.db: ok" in checked.stdout
    assert "fieldgate.db" not in checked.stdout and not (gw.data_dir / "fieldgate.db").exists()
    assert "postgresql://" in checked.stdout and "media" in checked.stdout  # the uploads are still checked
    vacuumed = gw.cli("db", "vacuum")
    assert vacuumed.returncode == 0 and "broker.db:" in vacuumed.stdout and "fieldgate.db" not in vacuumed.stdout


def test_qos2_delivery_resumes_at_pubrel_with_the_same_packet_id_after_sigkill(spawn, peers):
    gw = spawn(config=FAST)
    sock, _ = raw_connect(gw.port, "qos2-reader", clean=False)
    body = b"\x00\x05" + len(b"q2/x").to_bytes(2, "big") + b"q2/x" + b"\x02"
    sock.sendall(b"\x82" + bytes((len(body),)) + body)
    assert recv_exactly(sock, 5) == b"\x90\x03\x00\x05\x02"
    peers(gw.port).publish("q2/x", {"n": 1}, qos=2)
    publish = recv_exactly(sock, 2 + 2 + 4 + 2 + len(b'{"n": 1}'))
    assert publish[0] == 0x34  # PUBLISH, QoS 2, no DUP
    pid = publish[8:10]
    sock.sendall(b"\x50\x02" + pid)  # PUBREC
    assert recv_exactly(sock, 4) == b"\x62\x02" + pid  # PUBREL
    gw.kill()  # before our PUBCOMP
    sock.close()

    gw = spawn(config=FAST)
    again, connack = raw_connect(gw.port, "qos2-reader", clean=False)
    assert connack == b"\x20\x02\x01\x00"  # session present
    assert recv_exactly(again, 4) == b"\x62\x02" + pid  # the PUBREL again, not the PUBLISH
    again.sendall(b"\x70\x02" + pid)  # PUBCOMP
    again.close()


def test_drop_oldest_under_a_byte_bound_keeps_as_many_newest_messages_as_fit(spawn, peers):
    gw = spawn(config={"broker": {"max_queued_bytes": 100, "queue_full_policy": "drop_oldest"}})
    Peer(gw.port, "bytes-bound", clean_session=False, subscribe=("bytes/#",)).close()
    publisher = peers(gw.port)
    for n in range(20):
        publisher.publish("bytes/x", {"n": n + 10})  # 9 bytes each: 11 fit in 100
    back = peers(gw.port, "bytes-bound", clean_session=False)
    back.wait_for("bytes/x", lambda m: m["n"] == 29)
    assert [m.json()["n"] for m in back.messages] == list(range(19, 30))
