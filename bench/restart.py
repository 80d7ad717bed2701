"""Restart: how long `fieldgate serve` takes to come back with a large durable backlog.

broker.db is filled directly through BrokerStore (the same code path the broker's group commit
uses) with N queued messages spread over persistent sessions and M retained messages; then a
real `fieldgate serve` is started and a real paho client reconnects to one of the sessions.
Reported: seconds from process start to the "ready" log line, and to the first queued message
delivered.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from gateway.broker.store import Batch, BrokerStore, SessionRow

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def fill(data: Path, queued: int, retained: int, sessions: int) -> None:
    store = BrokerStore(data / "broker.db", synchronous="NORMAL")
    payload = b'{"_type":"location","lat":31.2304,"lon":121.4737,"tst":1763780000}'.ljust(200, b" ")
    batch = Batch()
    now = time.time()
    for s in range(sessions):
        batch.sessions[f"bench-{s}"] = SessionRow(f"bench-{s}", False, False, now, None)
        batch.subscriptions[(f"bench-{s}", f"bench/{s}/#")] = 1
    for i in range(queued):
        batch.messages.append((i + 1, f"bench/{i % sessions}/gps", payload, 1))
        batch.queued.append((i + 1, f"bench-{i % sessions}", i + 1, 1, len(payload)))
    for i in range(retained):
        batch.retained[f"orders/R{i:06d}/state"] = (payload, 1)
    store.apply(batch)
    store.close()


def run(queued: int, retained: int, sessions: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        started = time.perf_counter()
        fill(data, queued, retained, sessions)
        fill_s = time.perf_counter() - started
        config = data / "broker.yaml"
        config.write_text("broker:\n  max_queued_messages: 0\n  max_queued_bytes: 0\n")
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--port", "0", "--http-port", "0", "--data-dir", str(data),
             "--config", str(config)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        port = 0
        assert proc.stdout is not None
        for line in proc.stdout:
            if m := re.search(r"fieldgate ready mqtt=[^ ]*:(\d+)", line):
                port = int(m.group(1))
                break
        ready_s = time.perf_counter() - t0
        threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
        first = threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-0", clean_session=False)
        client.on_message = lambda *_: first.set()
        client.connect("127.0.0.1", port)
        client.loop_start()
        got = first.wait(60)
        first_s = time.perf_counter() - t0
        client.loop_stop()
        proc.terminate()
        proc.wait(30)
        if not got:
            raise SystemExit("no queued message was delivered within 60 s")
    return {"queued": queued, "retained": retained, "sessions": sessions, "fill_seconds": round(fill_s, 2),
            "start_to_ready_seconds": round(ready_s, 2), "start_to_first_delivery_seconds": round(first_s, 2)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench restart")
    parser.add_argument("--queued", type=int, default=100_000)
    parser.add_argument("--retained", type=int, default=100_000)
    parser.add_argument("--sessions", type=int, default=100)
    args = parser.parse_args(argv)
    result = run(args.queued, args.retained, args.sessions)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "restart.json").write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"{key:>34}: {value}")
    return 0
