"""Live views in the terminal: `fieldgate tail` and `fieldgate top`, run as an operator would."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

import pytest
from conftest import DEADLINE, ROOT, fieldgate, order

from cli.live import Scrape, quantile


def test_tail_follows_one_shops_day_and_stops_on_ctrl_c(gateway, peers, ids):
    shop, other, courier = ids("shop"), ids("other"), ids("c")
    mine, theirs, last = ids("A"), ids("B"), ids("C")
    tail = subprocess.Popen([sys.executable, "-m", "cli.main", "tail", "--shop", shop, "-n", "0",
                             "--data-dir", str(gateway.data_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200", **gateway.store_env})
    assert tail.stdout is not None
    lines: list[str] = []
    arrived = threading.Condition()

    def read() -> None:
        for text in tail.stdout:  # type: ignore[union-attr]
            with arrived:
                lines.append(text.rstrip())
                arrived.notify_all()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def wait_for(*words: str) -> str:
        with arrived:
            assert arrived.wait_for(lambda: any(all(w in line for w in words) for line in lines), DEADLINE), lines
            return next(line for line in lines if all(w in line for w in words))

    try:
        wait_for("following")
        client = peers(gateway.port, subscribe=(f"shops/{shop}/errors",))
        client.publish("orders/in", order(order_id=mine, shop_id=shop, courier_id=courier))
        client.publish("orders/in", order(order_id=theirs, shop_id=other))
        client.publish(f"shops/{shop}/commands", {"command": "packed", "order_id": ids("nope")})
        client.publish("orders/in", order(order_id=last, shop_id=shop))
        assert "created" in wait_for(mine, "created") and shop in wait_for(mine, "assigned")
        wait_for(mine, "notice")
        rejected = wait_for("rejected", f"shops/{shop}/commands")
        assert "unknown to the gateway" in rejected
        wait_for(last, "created")
        assert not any(theirs in line for line in lines)  # another shop's order, made before `last`
        tail.send_signal(signal.SIGINT)
        assert tail.wait(DEADLINE) == 0
        reader.join(DEADLINE)
        assert lines[-1] == "stopped"
    finally:
        if tail.poll() is None:
            tail.kill()


def test_top_draws_the_dashboard_in_80_by_24(gateway, peers, ids):
    phone = peers(gateway.port, subscribe=(f"couriers/{ids('c')}/tasks",))
    phone.publish("orders/in", order(order_id=ids("A"), courier_id=ids("c")))
    phone.wait_for(f"couriers/{ids('c')}/tasks")
    shown = gateway.cli("top", "--iterations", "2", columns=80, timeout=60)
    assert shown.returncode == 0, shown.stderr
    screen = shown.stdout.rstrip("\n").splitlines()
    assert len(screen) <= 24 and all(len(line) <= 80 for line in screen), shown.stdout
    text = shown.stdout
    for what in ("couriers online", "messages/s", "receipt", "queues", "webhooks", "orders", "connections"):
        assert what in text
    bridge = "mqtt" if isinstance(gateway.store, str) else "in_process"  # with PostgreSQL it joins over loopback
    assert re.search(rf"\b{bridge}\s+gateway\s+1\b", text) and "assigned" in text


def test_top_without_a_running_gateway_says_so(tmp_path):
    fieldgate("users", "add", "x", "--role", "operator", "--password-stdin", "--init", "--data-dir",
              str(tmp_path), stdin="pw\n")
    shown = fieldgate("top", "-n", "1", "--data-dir", str(tmp_path))
    assert shown.returncode == 1
    assert "no running gateway with an HTTP side" in shown.stderr and "hint:" in shown.stderr


def test_quantiles_from_histogram_buckets():
    buckets = [(0.01, 0.0), (0.1, 50.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.25, buckets) == pytest.approx(0.055)
    assert quantile(0.99, buckets) == pytest.approx(0.982)
    assert quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    earlier = [(0.01, 0.0), (0.1, 50.0), (1.0, 50.0), (float("inf"), 50.0)]
    assert quantile(0.5, buckets, earlier) == pytest.approx(0.55)  # only what came since: all between 0.1 and 1


def test_a_scrape_sums_and_groups_samples():
    text = ('# TYPE fieldgate_messages_in_total counter\n'
            'fieldgate_messages_in_total{topic="orders/in"} 3\n'
            'fieldgate_messages_in_total{topic="couriers/{courier_id}/gps"} 4\n'
            '# TYPE fieldgate_orders gauge\nfieldgate_orders{status="created"} 2\n')
    scrape = Scrape.parse(text, 0.0)
    assert scrape.total("fieldgate_messages_in_total") == 7
    assert scrape.total("fieldgate_messages_in_total", topic="orders/in") == 3
    assert scrape.by("fieldgate_orders", "status") == {"created": 2}
