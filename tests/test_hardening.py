"""Hardening: one gateway per data directory, a CLI that never writes the wrong file, sane clocks, true presence,
an ack for every step, answers for stray topics, retained state that ends, errors in one clear line."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
from collections.abc import Iterator

import pytest
from conftest import (
    PASSWORD,
    ROOT,
    GatewayProcess,
    Peer,
    add_user,
    eventually,
    fieldgate,
    fix,
    free_port,
    launch,
    not_started,
    order,
    raw_connect,
    store_config,
)

from gateway.store.tables import Store, db_path


def rows(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def courier_row(gw: GatewayProcess, courier: str) -> dict:
    done = gw.cli("couriers", "list", "--json")
    assert done.returncode == 0, done.stderr
    return next(r for r in rows(done.stdout) if r["courier_id"] == courier)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def authed(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[GatewayProcess]:
    """A gateway, on each store, with users (couriers log in as themselves) that still lets anonymous local tools
    in."""
    gw = launch(tmp_path_factory.mktemp("authed"), config={"log_level": "DEBUG", "broker": {"max_publish_rate": 0},
                                                           **store_config(request, "authed")})
    for name, role, user_id in (("h7", "courier", "h7"), ("h8", "courier", "h8"), ("h9", "courier", "h9"),
                                ("rose-terminal", "shop", "hrose")):
        add_user(gw, name, role, user_id)
    yield gw
    gw.kill()


# ---------------------------------------------------------------- 1. the data directory


def test_commands_run_from_another_folder_never_create_or_write_a_stray_database(tmp_path):
    elsewhere, home = tmp_path / "elsewhere", tmp_path / "home"
    elsewhere.mkdir()
    env = {"HOME": str(home)}
    default = home / ".local" / "share" / "fieldgate"
    for args in (["users", "list"], ["couriers", "list"], ["orders", "list"], ["stats"], ["sessions"]):
        done = fieldgate(*args, cwd=elsewhere, env=env)
        assert done.returncode == 1, done
        assert f"error: no fieldgate database at {default}" in done.stderr, done.stderr
        assert "hint:" in done.stderr and "Traceback" not in done.stderr
    refused = fieldgate("users", "add", "c7-phone", "--role", "courier", "--password-stdin", cwd=elsewhere, env=env,
                        stdin="pw\n")
    assert refused.returncode == 1 and "--init" in refused.stderr
    assert not list(elsewhere.iterdir()) and not default.exists()  # nothing was created anywhere

    verbose = fieldgate("users", "add", "c7-phone", "--role", "courier", "--password-stdin", "--init", "--verbose",
                        cwd=elsewhere, env=env, stdin="pw\n")
    assert verbose.returncode == 0, verbose.stderr
    assert f"data directory: {default} (default for a user with no broker.yaml" in verbose.stderr
    assert (default / "fieldgate.db").exists() and not list(elsewhere.iterdir())
    listed = fieldgate("users", "list", "--json", cwd=tmp_path, env=env)  # another folder: the same data
    assert [r["user"] for r in rows(listed.stdout)] == ["c7-phone"]


def test_an_empty_or_foreign_file_is_a_clear_error_for_readers_not_a_crash(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    sqlite3.connect(data / "fieldgate.db").close()  # an empty file, as the old CLI left behind
    done = fieldgate("couriers", "list", "--data-dir", str(data))
    assert done.returncode == 1 and "holds no fieldgate tables yet" in done.stderr
    assert "OperationalError" not in done.stderr and f"data directory {data}" in done.stderr


def test_a_relative_data_dir_is_relative_to_the_config_file_not_the_working_directory(tmp_path):
    conf = tmp_path / "etc" / "broker.yaml"
    conf.parent.mkdir()
    conf.write_text("storage:\n  data_dir: ../var/fg\n")
    for cwd in (tmp_path, ROOT):
        done = fieldgate("users", "list", "--config", str(conf), "--verbose", cwd=cwd)
        assert f"data directory: {tmp_path / 'etc' / '..' / 'var' / 'fg'}" in done.stderr


# ---------------------------------------------------------------- 2. one gateway per data directory


def test_a_second_gateway_on_the_same_data_directory_exits_at_once_and_vacuum_refuses(spawn, tmp_path):
    first = spawn()
    assert first.proc is not None
    second = fieldgate("serve", "--port", "0", "--data-dir", str(first.data_dir))
    assert second.returncode == 1
    assert (f"error: data directory {first.data_dir} is in use by another fieldgate (pid {first.proc.pid})"
            in second.stderr), second.stderr
    vacuum = fieldgate("db", "vacuum", "--data-dir", str(first.data_dir))
    assert vacuum.returncode == 1 and "is in use by another fieldgate" in vacuum.stderr
    bridge = fieldgate("bridge", "--broker", f"mqtt://127.0.0.1:{first.port}", "--data-dir", str(first.data_dir))
    assert bridge.returncode == 1 and "is in use by another fieldgate" in bridge.stderr

    first.kill()  # SIGKILL: the kernel releases the lock; no stale lock file blocks the restart
    spawn(data_dir=first.data_dir)
    sessions = fieldgate("sessions", "--json", "--data-dir", str(first.data_dir))
    bridge_row = next(r for r in rows(sessions.stdout) if r["client_id"] == "fieldgate-bridge")
    assert bridge_row["connected"] is True


# ---------------------------------------------------------------- 3. clocks


def test_a_fix_from_the_future_is_refused_and_does_not_freeze_the_courier(gateway, peers, ids):
    courier = ids("c")
    phone = peers(gateway.port, subscribe=(f"couriers/{courier}/errors", f"couriers/{courier}/location"))
    phone.publish(f"couriers/{courier}/gps", fix(ago=-30 * 86400))  # 30 days ahead
    [rejection] = phone.wait_for(f"couriers/{courier}/errors")
    assert "ahead of the gateway's clock" in rejection["reason"] and "gps.max_future_seconds" in rejection["reason"]
    good = fix(31.3, 121.5, ago=5)
    phone.publish(f"couriers/{courier}/gps", good)
    [location] = phone.wait_for(f"couriers/{courier}/location")
    assert location["tst"] == good["tst"]
    store = gateway.queries
    dead = store.query("SELECT reason FROM dead_letters WHERE topic = ?", [f"couriers/{courier}/gps"])
    assert len(dead) == 1 and "ahead" in dead[0]["reason"]


def test_a_week_old_fix_is_kept_in_history_but_never_becomes_the_location(gateway, peers, ids):
    courier = ids("c")
    phone = peers(gateway.port, subscribe=(f"couriers/{courier}/location", f"couriers/{courier}/errors"))
    current, stale = fix(31.1, 121.1, ago=60), fix(30.0, 120.0, ago=8 * 86400)
    phone.publish(f"couriers/{courier}/gps", current)
    phone.wait_for(f"couriers/{courier}/location")
    phone.publish(f"couriers/{courier}/gps", stale)
    phone.publish(f"couriers/{courier}/gps", {"_type": "location", "barrier": True})  # answered after both
    phone.wait_for(f"couriers/{courier}/errors")
    assert [m["tst"] for m in phone.on(f"couriers/{courier}/location")] == [current["tst"]]
    store = gateway.queries
    kept = [r["tst"] for r in store.query("SELECT tst FROM gps_fixes WHERE courier_id = ?", [courier])]
    assert sorted(kept) == sorted([current["tst"], stale["tst"]])


# ---------------------------------------------------------------- 4. presence per device


def test_a_couriers_only_phone_leaving_cleanly_makes_it_offline(authed, peers, ids):
    oid = ids("A")
    shop = peers(authed.port, subscribe=("shops/hrose/orders",))
    shop.publish("orders/in", order(order_id=oid, shop_id="hrose", courier_id="h7"))
    shop.wait_for("shops/hrose/orders", lambda e: e["kind"] == "assigned" and e["order_id"] == oid)
    phone = Peer(authed.port, "h7-phone", auth=("h7", PASSWORD))  # no will, no presence message
    eventually(lambda: courier_row(authed, "h7")["online"] == 1, "h7 online by its connection")
    phone.close()  # a clean DISCONNECT
    gone = shop.wait_for("shops/hrose/orders", lambda e: e["kind"] == "courier_offline" and e["order_id"] == oid)
    assert gone[0]["courier_id"] == "h7"
    row = courier_row(authed, "h7")
    assert row["online"] == 0 and row["devices_online"] == 0


def test_one_devices_will_does_not_take_a_courier_offline_while_another_device_is_connected(authed, peers, ids):
    oid = ids("A")
    shop = peers(authed.port, subscribe=("shops/hrose/orders",))
    shop.publish("orders/in", order(order_id=oid, shop_id="hrose", courier_id="h8"))
    shop.wait_for("shops/hrose/orders", lambda e: e["kind"] == "assigned" and e["order_id"] == oid)
    will = ("couriers/h8/presence", b'{"online": false}', 1, True)
    phone, connack = raw_connect(authed.port, "h8-phone", will=will, username="h8", password=PASSWORD)
    assert connack == b"\x20\x02\x00\x00"
    tablet = Peer(authed.port, "h8-tablet", auth=("h8", PASSWORD))
    eventually(lambda: courier_row(authed, "h8")["devices_online"] == 2, "both devices online")
    phone.close()  # out of coverage: its will fires
    authed.wait_log("courier device offline courier_id=h8 device=h8-phone")
    eventually(lambda: courier_row(authed, "h8")["devices_online"] == 1, "one device left")
    assert courier_row(authed, "h8")["online"] == 1
    assert not shop.on("shops/hrose/orders", lambda e: e["kind"] == "courier_offline" and e["order_id"] == oid)
    tablet.close()
    shop.wait_for("shops/hrose/orders", lambda e: e["kind"] == "courier_offline" and e["order_id"] == oid)


def test_a_keepalive_timeout_takes_the_device_offline(authed):
    sock, connack = raw_connect(authed.port, "h9-silent", keepalive=1, username="h9", password=PASSWORD)
    assert connack == b"\x20\x02\x00\x00"
    try:
        authed.wait_log("courier device offline courier_id=h9 device=h9-silent how=timeout")
    finally:
        sock.close()
    assert courier_row(authed, "h9")["online"] == 0


def test_anonymous_devices_name_themselves_in_their_presence(gateway, peers, ids):
    courier = ids("c")
    a = peers(gateway.port, will=(f"couriers/{courier}/presence", json.dumps({"online": False, "device": "a"}), True))
    a.publish(f"couriers/{courier}/presence", {"online": True, "device": "a"})
    b = peers(gateway.port)
    b.publish(f"couriers/{courier}/presence", {"online": True, "device": "b"})
    gateway.wait_log(f"courier device online courier_id={courier} device=b")
    a.client.socket().close()  # cut: a's will says a is offline, b still is online
    gateway.wait_log(f"courier device offline courier_id={courier} device=a")
    assert courier_row(gateway, courier)["online"] == 1


def test_after_a_crash_the_connections_of_before_are_offline(spawn, on_store):
    gw = spawn(config=on_store)
    add_user(gw, "k1", "courier", "k1")
    phone = Peer(gw.port, "k1-phone", auth=("k1", PASSWORD))
    eventually(lambda: courier_row(gw, "k1")["online"] == 1, "k1 online")
    gw.kill()  # its connections die with it; no DISCONNECT, no event
    phone.close()
    gw = spawn(data_dir=gw.data_dir, config=on_store)
    gw.wait_log("courier presence courier_id=k1 online=False")
    assert courier_row(gw, "k1")["devices_online"] == 0


# ---------------------------------------------------------------- 5, 6, 7: acks, unknown couriers, cancel tasks


def test_every_change_of_courier_or_status_by_a_shop_is_acked_to_the_order_system(gateway, peers, ids):
    oid, shop, courier = ids("A"), ids("shop"), ids("c")
    ordersys = peers(gateway.port, subscribe=("ordersys/acks",))
    terminal = peers(gateway.port)
    ordersys.publish("orders/in", order(order_id=oid, shop_id=shop, courier_id=None))
    ordersys.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["kind"] == "accepted")
    terminal.publish(f"shops/{shop}/commands", {"command": "assign", "order_id": oid, "courier_id": courier})
    [assigned] = ordersys.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["kind"] == "assigned")
    assert assigned["courier_id"] == courier and assigned["status"] == "assigned"
    terminal.publish(f"shops/{shop}/commands", {"command": "packed", "order_id": oid})
    terminal.publish(f"shops/{shop}/commands", {"command": "cancel", "order_id": oid, "reason": "shop closed"})
    acks = ordersys.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["kind"] == "status_changed",
                             count=2)
    assert [(a["status"], a["reason"]) for a in acks] == [("packed", None), ("cancelled", "shop closed")]


def test_an_order_for_a_courier_nobody_knows_is_accepted_and_said_so(gateway, peers, ids):
    oid, shop, ghost = ids("A"), ids("shop"), ids("ghost")
    ordersys = peers(gateway.port, subscribe=("ordersys/acks", f"shops/{shop}/orders"))
    ordersys.publish("orders/in", order(order_id=oid, shop_id=shop, courier_id=ghost))
    accepted, assigned = ordersys.wait_for("ordersys/acks", lambda a: a["order_id"] == oid, count=2)
    assert accepted["courier_known"] is False and assigned["courier_known"] is False
    [event] = ordersys.wait_for(f"shops/{shop}/orders", lambda e: e["kind"] == "assigned")
    assert event["courier_known"] is False
    row = courier_row(gateway, ghost)
    assert row["heard_from"] is False and row["active_orders"] == 1 and row["unreceived_tasks"] == 1
    table = gateway.cli("couriers", "list").stdout
    assert "never" in next(line for line in table.splitlines() if ghost in line)

    known = ids("c")
    peers(gateway.port).publish(f"couriers/{known}/gps", fix())
    gateway.wait_log(f"courier presence courier_id={known} online=True")
    ordersys.publish("orders/in", order(order_id=ids("B"), shop_id=shop, courier_id=known))
    [ack] = ordersys.wait_for("ordersys/acks", lambda a: a["courier_id"] == known and a["kind"] == "accepted")
    assert ack["courier_known"] is True


def test_the_old_couriers_cancel_task_carries_no_customer_data(gateway, peers, ids):
    oid, shop, c1, c2 = ids("A"), ids("shop"), ids("c1"), ids("c2")
    first = peers(gateway.port, subscribe=(f"couriers/{c1}/tasks",))
    first.publish("orders/in", order(order_id=oid, shop_id=shop, courier_id=c1))
    first.wait_for(f"couriers/{c1}/tasks", lambda t: t["kind"] == "assign")
    first.publish(f"shops/{shop}/commands", {"command": "assign", "order_id": oid, "courier_id": c2})
    [cancel] = first.wait_for(f"couriers/{c1}/tasks", lambda t: t["kind"] == "cancel")
    assert cancel["order"] is None and cancel["order_id"] == oid and cancel["reason"] == "reassigned"
    raw = next(m.payload for m in first.messages if b'"cancel"' in m.payload)
    for secret in (b"+8613800000000", b"Li Na", b"Sunshine", c2.encode()):
        assert secret not in raw


# ---------------------------------------------------------------- 8. topics outside the contract


def test_misspelt_topics_are_logged_counted_and_answered(gateway, peers, ids):
    client_id, courier = ids("erp"), ids("c")
    sender = peers(gateway.port, client_id, subscribe=(f"clients/{client_id}/errors", f"couriers/{courier}/errors"))
    sender.publish("order/in", order(order_id=ids("A")))
    sender.publish(f"couriers/{courier}/statuses", {"order_id": "A1", "status": "delivered"})
    [stray] = sender.wait_for(f"clients/{client_id}/errors")
    assert stray["topic"] == "order/in" and "not part of the fieldgate topic contract" in stray["reason"]
    assert "orders/in" in stray["hint"]
    [named] = sender.wait_for(f"couriers/{courier}/errors")
    assert named["topic"] == f"couriers/{courier}/statuses"
    gateway.wait_log(f"publish outside the topic contract: topic 'order/in' is not part of the fieldgate topic "
                     f"contract; nobody in the gateway reads it client_id={client_id}")
    for _ in range(3):  # logged and answered once per client and topic a minute, counted every time
        sender.publish("order/in", {"again": True})
    sender.publish(f"couriers/{courier}/statuses", {"barrier": True})
    sessions = gateway.cli("sessions", "--json")
    eventually(lambda: next(r for r in rows(gateway.cli("sessions", "--json").stdout)
                            if r["client_id"] == client_id)["off_contract"] == 6, "6 stray publishes counted")
    assert sessions.returncode == 0
    assert len(sender.on(f"clients/{client_id}/errors")) == 1
    assert len([line for line in gateway.lines if f"client_id={client_id}" in line and "outside" in line]) == 2


def test_a_courier_user_publishing_a_wrong_topic_is_answered_on_its_own_errors_topic(authed, peers):
    phone = Peer(authed.port, "h7-typo", auth=("h7", PASSWORD), subscribe=("couriers/h7/errors",))
    try:
        phone.publish("couriers/h7/statuses", {"order_id": "A1", "status": "delivered"})
        [answer] = phone.wait_for("couriers/h7/errors")
        assert answer["topic"] == "couriers/h7/statuses" and "may not publish" in answer["reason"]
    finally:
        phone.close()


# ---------------------------------------------------------------- 9, 10: retained states that end, open orders


def test_the_retained_state_of_a_finished_order_is_cleared_after_retain_final_seconds(spawn, peers, on_store):
    gw = spawn(config={"bridge": {"retain_final_seconds": 1}, **on_store})
    ordersys = peers(gw.port, subscribe=("ordersys/acks",))
    ordersys.publish("orders/in", order(order_id="R-1", courier_id="c7"))
    ordersys.publish("orders/in", order(order_id="R-2", courier_id="c7"))
    peers(gw.port).publish("couriers/c7/status", {"order_id": "R-1", "status": "delivered"})
    ordersys.wait_for("ordersys/acks", lambda a: a["order_id"] == "R-1" and a["status"] == "delivered")
    store = gw.queries
    eventually(lambda: store.conn.execute("SELECT state_cleared FROM orders WHERE order_id = 'R-1'").fetchone()[0],
               "R-1's state cleared")
    late = peers(gw.port, subscribe=("orders/+/state",))
    [kept] = late.wait_for("orders/R-2/state")
    assert kept["status"] == "assigned"
    late.wait_until(lambda: any(m.retain for m in late.messages), "retained states delivered")
    assert not late.on("orders/R-1/state")  # the open order is still retained, the finished one is gone
    assert store.get_order("R-1").status == "delivered"  # and stays in the store
    shown = gw.cli("orders", "show", "R-1")
    assert shown.returncode == 0 and "delivered" in shown.stdout


def test_a_restarting_shop_terminal_fetches_its_open_orders(gateway, peers, ids):
    shop, other = ids("shop"), ids("other")
    terminal = peers(gateway.port, subscribe=(f"shops/{shop}/open", "ordersys/acks"))
    wanted = [ids(f"O{i}") for i in range(3)]
    for oid in wanted:
        terminal.publish("orders/in", order(order_id=oid, shop_id=shop, courier_id=None))
    terminal.publish("orders/in", order(order_id=ids("X"), shop_id=other))
    done = ids("D")
    terminal.publish("orders/in", order(order_id=done, shop_id=shop, courier_id=None))
    terminal.publish(f"shops/{shop}/commands", {"command": "cancel", "order_id": done})
    terminal.wait_for("ordersys/acks", lambda a: a["order_id"] == done and a["status"] == "cancelled")

    terminal.publish(f"shops/{shop}/open/get", {"request_id": "r1", "limit": 2})
    [page] = terminal.wait_for(f"shops/{shop}/open", lambda a: a["request_id"] == "r1")
    assert page["shop_id"] == shop and page["more"] is True
    assert [o["order_id"] for o in page["orders"]] == sorted(wanted)[:2]
    assert page["orders"][0]["recipient"]["name"] == "Li Na"  # enough to rebuild the board
    terminal.publish(f"shops/{shop}/open/get", {"request_id": "r2", "after": page["orders"][-1]["order_id"]})
    [rest] = terminal.wait_for(f"shops/{shop}/open", lambda a: a["request_id"] == "r2")
    assert [o["order_id"] for o in rest["orders"]] == sorted(wanted)[2:] and rest["more"] is False


def test_a_shop_terminal_asks_for_one_of_its_orders_state_and_not_another_shops(gateway, peers, ids):
    shop, other, courier = ids("shop"), ids("other"), ids("c")
    mine, theirs = ids("M"), ids("T")
    terminal = peers(gateway.port, subscribe=("ordersys/acks", f"shops/{shop}/errors"))
    terminal.publish("orders/in", order(order_id=mine, shop_id=shop, courier_id=courier))
    terminal.publish("orders/in", order(order_id=theirs, shop_id=other, courier_id=courier))
    terminal.wait_for("ordersys/acks", lambda a: a["order_id"] == theirs and a["kind"] == "accepted")
    terminal.subscribe(f"orders/{mine}/state")
    terminal.publish(f"shops/{shop}/state/get", {"order_id": mine})
    answers = terminal.wait_for(f"orders/{mine}/state", count=2)  # the retained one, then the answer
    assert answers[-1]["order_id"] == mine and answers[-1]["status"] == "assigned"
    assert answers[-1]["courier_id"] == courier
    terminal.publish(f"shops/{shop}/state/get", {"order_id": theirs})
    [refused] = terminal.wait_for(f"shops/{shop}/errors")
    assert f"order {theirs} is unknown" in refused["reason"]  # another shop's order is not even said to exist


# ---------------------------------------------------------------- 11. errors: one clear line each


def check_one_clear_error(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    [at] = [i for i, line in enumerate(lines) if line.startswith("error: ")]  # log lines may come before it
    assert lines[at + 1].startswith("hint: "), done.stderr
    assert "Traceback" not in done.stderr and "Error:" not in done.stderr.replace("error:", ""), done.stderr
    for text in expected:
        assert text in done.stderr, done.stderr


def test_a_port_in_use_is_one_line_with_the_right_hint(spawn, tmp_path):
    first = spawn()
    done = fieldgate("serve", "--port", str(first.port), "--data-dir", str(tmp_path / "other"))
    check_one_clear_error(done, f"could not listen on 127.0.0.1:{first.port}", "in use")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["serve", "--data-dir", "/proc/nope"], ["cannot use data directory /proc/nope"]),
        (["serve", "--port", "99999"], ["--port", "65535"]),
        (["orders", "list", "--data-dir", "/nonexistent/fg"], ["no fieldgate database at /nonexistent/fg"]),
        (["serve", "--config", "/nonexistent/broker.yaml"], ["/nonexistent/broker.yaml does not exist"]),
    ],
    ids=["unusable-data-dir", "port-out-of-range", "no-database", "no-config"],
)
def test_no_library_exception_escapes_the_cli_unmapped(args, expected, tmp_path):
    done = fieldgate(*args, env={"HOME": str(tmp_path)})
    check_one_clear_error(done, *expected)
    assert "another broker" not in done.stderr


def test_a_locked_database_says_so_with_a_hint_that_fits(tmp_path):
    data = tmp_path / "data"
    add_user(not_started(data), "x", "operator")
    holder = sqlite3.connect(data / "fieldgate.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the database for longer than the CLI waits
    try:
        done = fieldgate("users", "add", "y", "--role", "operator", "--password-stdin", "--data-dir", str(data),
                         stdin="pw\n")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    check_one_clear_error(done, "database is locked", "try again")
    assert "--data-dir" not in done.stderr.split("hint:")[1].splitlines()[0]


def test_a_subscriber_leaving_during_a_retained_backlog_is_not_a_flood_of_warnings(spawn, peers):
    gw = spawn(config={"log_level": "DEBUG", "broker": {"max_publish_rate": 0}})
    publisher = peers(gw.port)
    for n in range(1500):
        publisher.client.publish(f"backlog/{n}", b"x" * 200, qos=1, retain=True)
    publisher.publish("backlog/last", {"last": True}, retain=True)
    sock, _ = raw_connect(gw.port, "leaver")
    sock.sendall(b"\x82\x0e\x00\x01\x00\x09backlog/#\x00")  # SUBSCRIBE backlog/# at QoS 0, then leave at once
    sock.close()
    probe = peers(gw.port, subscribe=("backlog/last",))
    probe.wait_for("backlog/last")
    gw.wait_log("client connected client_id=leaver")
    assert not [line for line in gw.lines if "socket.send() raised exception" in line]


# ---------------------------------------------------------------- 12. tables at 80 columns, --json


def test_every_list_fits_80_columns_and_takes_json(gateway, peers, ids):
    shop, courier = ids("shop"), ids("courier-with-a-long-name")
    phone = peers(gateway.port, subscribe=(f"couriers/{courier}/tasks",))
    for n in range(4):
        phone.publish("orders/in", order(order_id=ids(f"order-with-a-long-id-{n}"), shop_id=shop, courier_id=courier))
    phone.wait_for(f"couriers/{courier}/tasks", count=4)
    phone.publish(f"couriers/{courier}/gps", fix())
    gateway.wait_log(f"courier presence courier_id={courier} online=True")
    for args, headers in (
        (["orders", "list", "--shop", shop, "--limit", "3"], ["order", "shop", "courier", "status", "changed"]),
        (["couriers", "list"], ["courier", "online", "devices", "seen", "fix", "active", "unread"]),
        (["sessions"], ["client id", "up", "seen", "queued", "unacked", "dropped", "denied", "stray"]),
        (["users", "list"], []),
    ):
        done = gateway.cli(*args, columns=80)
        assert done.returncode == 0, done.stderr
        too_wide = [line for line in done.stdout.splitlines() if len(line) > 80]
        assert not too_wide, "\n".join(too_wide)
        assert "…" not in done.stdout
        header = next((line for line in done.stdout.splitlines() if headers and re.search(rf"\b{headers[-1]}\b", line)),
                      "")
        for name in headers:
            assert re.search(rf"\b{name}\b", header), (name, header)
        as_json = gateway.cli(*args, "--json")
        assert all(isinstance(json.loads(line), dict) for line in as_json.stdout.splitlines())
    listed = gateway.cli("orders", "list", "--shop", shop, "--limit", "3", columns=80).stdout
    assert "showing 3 of 4; --limit shows more" in listed
    [me] = [r for r in rows(gateway.cli("couriers", "list", "--json").stdout) if r["courier_id"] == courier]
    assert me["active_orders"] == 4 and len(me["active_ids"]) == 4  # counts in the table, lists in --json


# ---------------------------------------------------------------- 13. the operator's surface


def test_the_bridge_waits_for_its_broker_and_logs_each_attempt(spawn, tmp_path, mosquitto_at):
    port = free_port()
    bridge = spawn("--broker", f"mqtt://127.0.0.1:{port}", command="bridge",
                   ready=r"cannot reach the broker.*attempt=2", data_dir=tmp_path / "bridge-data")
    assert bridge.proc is not None and bridge.proc.poll() is None
    with mosquitto_at(port):
        bridge.wait_log("fieldgate bridge ready", timeout=45)
        assert bridge.stop(signal.SIGTERM) == 0


def test_operators_act_from_the_cli_through_the_running_gateway(gateway, peers, ids):
    oid, shop, courier = ids("A"), ids("shop"), ids("c")
    watch = peers(gateway.port, subscribe=(f"couriers/{courier}/tasks", "ordersys/acks", f"shops/{shop}/orders"))
    watch.publish("orders/in", order(order_id=oid, shop_id=shop, courier_id=None))
    watch.wait_for("ordersys/acks", lambda a: a["order_id"] == oid)

    assigned = gateway.cli("orders", "assign", oid, "--courier", courier)
    assert assigned.returncode == 0 and f"order {oid}: now assigned, courier {courier}" in assigned.stdout
    watch.wait_for(f"couriers/{courier}/tasks", lambda t: t["kind"] == "assign" and t["order_id"] == oid)
    [ack] = watch.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["kind"] == "assigned")
    assert ack["courier_id"] == courier
    [event] = watch.wait_for(f"shops/{shop}/orders", lambda e: e["kind"] == "assigned")
    assert event["order"]["courier_id"] == courier
    assert gateway.cli("orders", "packed", oid).returncode == 0
    watch.wait_for(f"couriers/{courier}/tasks", lambda t: t["kind"] == "ready_for_pickup")
    again = gateway.cli("orders", "packed", oid)
    assert again.returncode == 0 and "no change" in again.stdout
    cancelled = gateway.cli("orders", "cancel", oid, "--reason", "customer called")
    assert cancelled.returncode == 0 and "now cancelled" in cancelled.stdout
    timeline = gateway.queries.timeline(oid)
    assert [e["actor"] for e in timeline if e["kind"] in ("assigned", "status")] == ["operator"] * 3

    refused = gateway.cli("orders", "packed", ids("nope"))
    check_one_clear_error(refused, "refused: order", "is unknown to the gateway")
    late = gateway.cli("orders", "assign", oid, "--courier", courier)
    check_one_clear_error(late, "refused:", "cancelled")


def test_operator_commands_need_a_running_gateway(tmp_path):
    data = tmp_path / "data"
    add_user(not_started(data), "ops", "operator")
    done = fieldgate("orders", "packed", "A1", "--data-dir", str(data))
    check_one_clear_error(done, f"no gateway is running on data directory {data}; nothing was changed")


def test_serve_takes_host(spawn):
    gw = spawn("--host", "127.0.0.1")
    assert gw.wait_log("fieldgate ready mqtt=127.0.0.1:")


def test_the_systemd_unit_runs_fieldgate_as_a_service():
    unit = (ROOT / "contrib" / "fieldgate.service").read_text()
    assert "Restart=on-failure" in unit and "/var/lib/fieldgate" in unit
    assert re.search(r"^ExecStart=.*fieldgate serve", unit, re.M)
    readme = (ROOT / "README.md").read_text()
    assert "contrib/fieldgate.service" in readme and "systemctl" in readme


def test_the_bridges_template_unit_runs_fieldgate_bridge_with_options_it_has():
    unit = (ROOT / "contrib" / "fieldgate-bridge@.service").read_text()
    [command] = re.findall(r"^ExecStart=\S+ (.*)$", unit, re.M)
    words = command.replace("$FIELDGATE_ENGINES", "--engine amqp://u:p@h/").replace("%i", "1").split()
    assert words[0] == "bridge" and "EnvironmentFile=/etc/fieldgate/bridge.env" in unit
    offered = fieldgate("bridge", "--help", columns=200).stdout
    for option in (w for w in words if w.startswith("--")):
        assert option in offered, f"the unit passes {option}, which `fieldgate bridge` does not take"
    assert "FIELDGATE_STORAGE_URL=" in unit and "contrib/fieldgate-bridge@.service" in (ROOT / "README.md").read_text()




def test_files_of_the_previous_version_are_upgraded_in_place_and_readers_wait_for_it(tmp_path):
    from gateway.broker.store import BrokerStore

    data = tmp_path / "data"
    data.mkdir()
    old = sqlite3.connect(data / "fieldgate.db")
    old.executescript("""
        PRAGMA application_id = 1178092610;
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE orders (order_id TEXT PRIMARY KEY, shop_id TEXT NOT NULL, courier_id TEXT, status TEXT NOT NULL,
            progress TEXT NOT NULL, order_json TEXT NOT NULL, location_json TEXT, created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL, purged INTEGER DEFAULT 0);
    """)
    old.execute("INSERT INTO orders VALUES ('OLD', 'rose', NULL, 'delivered', 'delivered', ?, NULL, ?, ?, 0)",
                (json.dumps(order(order_id="OLD")), "2026-01-01T00:00:00.000+00:00", "2026-01-01T00:00:00.000+00:00"))
    old.commit()
    old.close()
    broker = sqlite3.connect(data / "broker.db")
    broker.executescript("""
        PRAGMA application_id = 1178092114;
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE sessions (client_id TEXT PRIMARY KEY, clean INTEGER NOT NULL, connected INTEGER NOT NULL,
            last_seen FLOAT NOT NULL, will_topic TEXT, will_payload BLOB, will_qos INTEGER, will_retain INTEGER,
            dropped INTEGER DEFAULT 0, denied INTEGER DEFAULT 0);
        INSERT INTO sessions (client_id, clean, connected, last_seen) VALUES ('phone', 0, 0, 1.0);
        CREATE TABLE messages (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL,
            qos INTEGER NOT NULL);
        INSERT INTO messages VALUES (7, 'couriers/c7/tasks', X'7B7D0A', 1);
        CREATE TABLE queue (id INTEGER PRIMARY KEY, client_id TEXT NOT NULL, message_id INTEGER NOT NULL,
            qos INTEGER NOT NULL, sent INTEGER DEFAULT 0, packet_id INTEGER);
        INSERT INTO queue (id, client_id, message_id, qos) VALUES (1, 'phone', 7, 1);
    """)
    broker.close()
    done = fieldgate("orders", "list", "--data-dir", str(data))
    assert done.returncode == 1 and "schema version 1" in done.stderr and "upgrades the file" in done.stderr

    Store(db_path(data)).close()  # what `fieldgate serve` does at start
    BrokerStore(data / "broker.db").close()
    listed = rows(fieldgate("orders", "list", "--json", "--data-dir", str(data)).stdout)
    assert [r["order_id"] for r in listed] == ["OLD"]
    [phone] = rows(fieldgate("sessions", "--json", "--data-dir", str(data)).stdout)
    assert phone["client_id"] == "phone" and phone["off_contract"] == 0 and phone["queued"] == 1
    upgraded = sqlite3.connect(data / "broker.db")
    assert upgraded.execute("SELECT size FROM queue").fetchall() == [(3,)]  # schema 3 keeps each payload's size
    upgraded.close()
