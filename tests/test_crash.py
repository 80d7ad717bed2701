"""Load + crash: publishers stream orders and GPS while the gateway is SIGKILLed, over and over (10 times in
the default suite; FIELDGATE_CRASH_CYCLES=20 for the full run quoted in the README).

Every message that got a PUBACK must end up in fieldgate.db and reach its persistent subscribers
(an audit client on the raw topics, and the couriers' phones on their tasks). QoS 1 allows duplicates; they
are counted and printed (run with -s to see the report).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from typing import Any

import paho.mqtt.client as paho
import pytest
from conftest import DEADLINE, Peer, order
from paho.mqtt.enums import CallbackAPIVersion

from gateway.store.queries import Queries
from gateway.store.tables import db_path

CYCLES = int(os.environ.get("FIELDGATE_CRASH_CYCLES", "10"))
COURIERS = [f"cc{i:03d}" for i in range(200)]  # a busy street: a dozen active orders each

T0 = int(time.time()) - 500_000


class Streamer:
    """Publishes orders and GPS fixes at QoS 1 as fast as the gateway takes them; remembers what was PUBACKed."""

    def __init__(self, port: int, cycle: int) -> None:
        self.cycle = cycle
        self.sent: dict[int, tuple[str, str]] = {}  # mid -> (kind, key)
        self.acked_mids: list[int] = []
        self.cond = threading.Condition()
        self.stop = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"streamer-{cycle}", clean_session=True)
        self.client.max_inflight_messages_set(100)
        self.client.on_publish = self._on_publish
        connected = threading.Event()
        self.client.on_connect = lambda *_: connected.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert connected.wait(DEADLINE), "streamer could not connect"
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _on_publish(self, _c: Any, _u: Any, mid: int, _r: Any, _p: Any) -> None:
        with self.cond:
            self.acked_mids.append(mid)
            self.cond.notify_all()

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set() and n < 5000:
            with self.cond:
                self.cond.wait_for(lambda: len(self.sent) - len(self.acked_mids) < 200 or self.stop.is_set(), 1.0)
            if self.stop.is_set() or not self.client.is_connected():
                return
            courier = COURIERS[n // 2 % len(COURIERS)]
            if n % 2:
                key = f"X{self.cycle:02d}-{n:05d}"
                info = self.client.publish("orders/in", json.dumps(order(order_id=key, courier_id=courier)), qos=1)
                kind = "order"
            else:
                tst = T0 + self.cycle * 20_000 + n  # unique, within gps.max_age_seconds
                fix = {"_type": "location", "lat": 31.2, "lon": 121.4, "tst": tst}
                info = self.client.publish(f"couriers/{courier}/gps", json.dumps(fix), qos=1)
                key, kind = str(tst), "gps"
            with self.cond:
                self.sent[info.mid] = (kind, key)
            n += 1

    def wait_acked(self, count: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.acked_mids) >= count, DEADLINE), "streaming stalled"

    def finish(self) -> set[tuple[str, str]]:
        self.stop.set()
        with self.cond:
            self.cond.notify_all()
        self.thread.join(DEADLINE)
        self.client.loop_stop()
        return {self.sent[mid] for mid in self.acked_mids}


@pytest.mark.timeout(400)
def test_nothing_acknowledged_is_lost_across_sigkills_under_load(spawn, peers):
    rng = random.Random(20261122)
    config = {"broker": {"retry_interval_seconds": 2}, "bridge": {"task_retry_seconds": 600}}
    gw = spawn(config=config)
    Peer(gw.port, "audit", clean_session=False, subscribe=("orders/in", "couriers/+/gps")).close()
    Peer(gw.port, "phones", clean_session=False, subscribe=("couriers/+/tasks",)).close()

    acked: set[tuple[str, str]] = set()
    for cycle in range(CYCLES):
        if cycle:
            gw = spawn(config=config)
        streamer = Streamer(gw.port, cycle)
        streamer.wait_acked(rng.randint(50, 400))
        gw.kill()  # SIGKILL at a random point of the stream
        acked |= streamer.finish()
        print(f"cycle {cycle}: {len(acked)} acknowledged so far", flush=True)

    gw = spawn(config=config)
    orders = {key for kind, key in acked if kind == "order"}
    fixes = {int(key) for kind, key in acked if kind == "gps"}
    audit = peers(gw.port, "audit", clean_session=False)
    phone = peers(gw.port, "phones", clean_session=False)

    seen: set[str] = set()
    tst: set[int] = set()
    read = 0

    def audit_has_all() -> bool:  # re-checked on every message, under the peer's lock: reads only the new ones
        nonlocal read
        for m in audit.messages[read:]:
            if m.topic == "orders/in":
                seen.add(m.json().get("order_id"))
            else:
                tst.add(m.json().get("tst"))
        read = len(audit.messages)
        return orders <= seen and fixes <= tst

    print("final start", flush=True)
    audit.wait_until(audit_has_all, "every acknowledged order and fix at the audit subscriber", timeout=120)
    phone.wait_until(lambda: orders <= {m.json()["order_id"] for m in phone.messages},
                     "a task for every acknowledged order", timeout=120)
    store = Queries(db_path(gw.data_dir))
    stored_orders = {r["order_id"] for r in store.query("SELECT order_id FROM orders")}
    stored_fixes = {r["tst"] for r in store.query("SELECT tst FROM gps_fixes")}
    lost = len(orders - stored_orders) + len(fixes - stored_fixes)

    received = len(audit.messages)
    unique = len({(m.topic, m.payload) for m in audit.messages})
    task_dups = len(phone.messages) - len({m.json()["order_id"] for m in phone.messages})
    print(f"\ncrash report: cycles={CYCLES} acked={len(acked)} (orders={len(orders)} gps={len(fixes)}) lost={lost} "
          f"audit_duplicates={received - unique} task_duplicates={task_dups}")
    assert lost == 0
