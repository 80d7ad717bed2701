"""The workloads. Each runs publishers and subscribers in separate processes against one broker.

On fieldgate the messages are real gateway traffic (OwnTracks fixes, orders, status updates) and
the latencies include the bridge: order → courier task, status → order-system ack. On amqtt and
Mosquitto, which have no gateway, the same clients measure the bare broker hop on the same topics
(order → a subscriber of orders/in, status → a subscriber of the status topic). That is the
comparison a shop makes: what the gateway costs over a bare broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from bench.brokers import ROOT, Running, mosquitto_pub_binary
from bench.client import Client, padded, sent_at, stamp
from gateway.config import BrokerSettings

#: Where the dispatch workload's shop is.
SHOP = (31.2304, 121.4737)

Result = dict[str, Any]
#: A subscriber that has had no message for this long stops waiting for the rest (they were lost).
IDLE_GIVE_UP = 10.0


def _run_process(target: Callable[..., Coroutine[Any, Any, Any]], args: tuple[Any, ...],
                 out: mp.Queue) -> None:  # type: ignore[type-arg]
    try:
        out.put(asyncio.run(target(*args)))
    except Exception as exc:  # report, do not hang the parent
        out.put({"error": repr(exc)})


def in_processes(jobs: list[tuple[Callable[..., Coroutine[Any, Any, Any]], tuple[Any, ...]]],
                 timeout: float) -> list[Any]:
    """Run each (coroutine function, args) in its own process; their return values, in order."""
    ctx = mp.get_context("fork")
    queues = [ctx.Queue() for _ in jobs]
    procs = [ctx.Process(target=_run_process, args=(fn, args, q), daemon=True)
             for (fn, args), q in zip(jobs, queues, strict=True)]
    for p in procs:
        p.start()
    results = [q.get(timeout=timeout) for q in queues]
    for p in procs:
        p.join(10)
    errors = [r["error"] for r in results if isinstance(r, dict) and "error" in r]
    if errors:
        raise RuntimeError("; ".join(errors))
    return results


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    if not samples_ms:
        return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    ordered = sorted(samples_ms)
    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered), 3),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
            "max_ms": round(ordered[-1], 3)}


def fix(courier: str, seq: int) -> bytes:
    return padded({"_type": "location", "lat": 31.2304, "lon": 121.4737, "tst": seq, "tid": courier[-2:],
                   "t": stamp()})


# ---------------------------------------------------------------- 1. durable ingest burst


async def _ingest_subscriber(port: int, total: int, start_flag: Any) -> Result:
    done = asyncio.Event()
    seen = {"n": 0, "first": 0.0, "last": 0.0}

    def on_message(topic: str, payload: bytes) -> None:
        seen["n"] += 1
        seen["last"] = time.time()
        if seen["n"] >= total:
            done.set()

    client = Client(on_message)
    await client.connect(port, "bench-ingest-sub")
    await client.subscribe("couriers/+/gps")
    start_flag.set()
    while not done.is_set():  # until all arrived, or nothing arrived for IDLE_GIVE_UP seconds
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), IDLE_GIVE_UP)
        if seen["last"] and time.time() - seen["last"] >= IDLE_GIVE_UP:
            break
    await client.close()
    return seen


async def _ingest_publisher(port: int, first: int, clients: int, per_client: int, window: int) -> Result:
    async def one(i: int) -> None:
        courier = f"b{first + i:03d}"
        client = Client()
        await client.connect(port, f"bench-pub-{courier}", window=window)
        for seq in range(1, per_client + 1):
            await client.publish(f"couriers/{courier}/gps", fix(courier, seq))
        await client.drain()
        await client.close()

    started = time.time()
    await asyncio.gather(*(one(i) for i in range(clients)))
    return {"started": started, "finished": time.time()}


def ingest(broker: Running, *, messages: int, publishers: int, window: int = 20) -> Result:
    """N GPS fixes from M couriers at QoS 1 → one subscriber; for fieldgate, also rows committed."""
    ctx = mp.get_context("fork")
    flag = ctx.Event()
    sub_q = ctx.Queue()
    sub = ctx.Process(target=_run_process, args=(_ingest_subscriber, (broker.port, messages, flag), sub_q),
                      daemon=True)
    sub.start()
    flag.wait(30)
    per_process = publishers // 2
    per_client = messages // publishers
    pubs = in_processes([(_ingest_publisher, (broker.port, k * per_process, per_process, per_client, window))
                         for k in range(2)], timeout=600)
    got = sub_q.get(timeout=600)
    sub.join(10)
    started = min(p["started"] for p in pubs)
    acked = max(p["finished"] for p in pubs)
    total = per_client * publishers
    result: Result = {"messages": total, "publishers": publishers,
                      "acked_per_s": round(total / (acked - started)),
                      "received": got["n"], "delivered_per_s": round(got["n"] / max(got["last"] - started, 1e-9))}
    if broker.data_dir is not None:
        db = sqlite3.connect(f"file:{broker.data_dir / 'fieldgate.db'}?mode=ro", uri=True)
        deadline = time.time() + 300
        rows = 0
        while time.time() < deadline:
            rows = db.execute("SELECT COUNT(*) FROM gps_fixes").fetchone()[0]
            if rows >= total:
                break
            time.sleep(0.05)
        result["rows_committed"] = rows
        result["rows_per_s"] = round(rows / (time.time() - started))
    return result


# ---------------------------------------------------------------- 2. paced latency


async def _background(port: int, rate: int, seconds: float) -> Result:
    clients = []
    for i in range(10):
        c = Client()
        await c.connect(port, f"bench-bg-{i}", window=100)
        clients.append(c)
    seq = 0
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    end = time.monotonic() + seconds
    next_at = time.monotonic()
    while time.monotonic() < end:
        for _ in range(per_tick):
            seq += 1
            c = clients[seq % len(clients)]
            await c.publish(f"couriers/bg{seq % len(clients):02d}/gps", fix("bg", seq))
        next_at += tick
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    for c in clients:
        await c.drain()
        await c.close()
    return {"sent": seq}


def _status(order_id: str, status: str, reason: str | None = None) -> bytes:
    return json.dumps({"order_id": order_id, "status": status, **({"reason": reason} if reason else {})}).encode()


async def _courier(port: int, gateway: bool, seconds: float, ready: Any, dispatched: bool = False) -> Result:
    """The one courier: receipts its tasks and moves each order on at once. Only the first status of an order carries
    a send time (its ack is what `status_to_ack` measures); a picked-up order is delivered right after, so the
    courier has an order or two active at a time, as a real one has (not every order of the run)."""
    latencies: list[float] = []
    pending: set[asyncio.Task[None]] = set()
    client: Client

    async def publish(messages: tuple[tuple[str, bytes], ...]) -> None:
        for topic, body in messages:  # in this order
            await client.publish(topic, body)

    def send(*messages: tuple[str, bytes]) -> None:
        task = asyncio.get_running_loop().create_task(publish(messages))
        pending.add(task)
        task.add_done_callback(pending.discard)

    def on_message(topic: str, payload: bytes) -> None:
        latencies.append((time.time_ns() - sent_at(payload)) / 1e6)
        if not gateway:  # the bare hop: the measured status, then one more, as the gateway's courier delivers
            send(("couriers/lc/status", padded({"reason": stamp()})),
                 ("couriers/lc/status", padded({"status": "delivered"})))
            return
        task = json.loads(payload)
        send(("couriers/lc/receipts", json.dumps({"msg_ids": [task["msg_id"]]}).encode()))
        order_id = task["order_id"]
        if dispatched:  # delivered at once: stays idle, stays eligible
            send(("couriers/lc/status", _status(order_id, "delivered", stamp())))
        else:
            send(("couriers/lc/status", _status(order_id, "picked_up", stamp())),
                 ("couriers/lc/status", _status(order_id, "delivered")))

    client = Client(on_message)
    await client.connect(port, "bench-courier")
    await client.subscribe("couriers/lc/tasks" if gateway else "orders/in")
    if dispatched:  # online, with a fresh fix at the shop: the one eligible courier
        await client.publish("couriers/lc/presence", b'{"online": true}')
        await client.publish("couriers/lc/gps", json.dumps({"_type": "location", "lat": SHOP[0], "lon": SHOP[1],
                                                             "tst": int(time.time())}).encode())
        await client.drain()
    ready.set()
    await asyncio.sleep(seconds + 3)
    await client.close()
    return {"task": latencies}


async def _ordersys(port: int, gateway: bool, seconds: float, interval: float, dispatched: bool = False) -> Result:
    latencies: list[float] = []

    def on_message(topic: str, payload: bytes) -> None:  # statuses stamped by the courier (not its "delivered")
        if b"sent:" in payload and (not gateway or b'"status_changed"' in payload):
            latencies.append((time.time_ns() - sent_at(payload)) / 1e6)

    client = Client(on_message)
    await client.connect(port, "bench-ordersys")
    await client.subscribe("ordersys/acks" if gateway else "couriers/lc/status")
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        n += 1
        body = {"order_id": f"L{n:05d}-{random.randrange(1 << 30)}", "shop_id": "bench",
                **({} if dispatched else {"courier_id": "lc"}),
                "recipient": {"name": "Li Na", "phone": "+8613800000000"}, "address": {"text": "Sunshine 5-3-401"},
                "items": [{"name": "roses", "qty": 11}], "notes": stamp()}
        await client.publish("orders/in", padded(body) if not gateway else json.dumps(body).encode())
        await asyncio.sleep(interval)
    await asyncio.sleep(3)
    await client.close()
    return {"ack": latencies, "orders": n}


def latency(broker: Running, *, seconds: float, background_rate: int = 1000, dispatched: bool = False) -> Result:
    """1,000 msg/s of background GPS while the order system sends an order every 100 ms."""
    gateway = broker.name == "fieldgate"
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    q = ctx.Queue()
    courier = ctx.Process(target=_run_process, args=(_courier, (broker.port, gateway, seconds, ready, dispatched), q),
                          daemon=True)
    courier.start()
    ready.wait(30)
    bg, orders = in_processes([(_background, (broker.port, background_rate, seconds)),
                               (_ordersys, (broker.port, gateway, seconds, 0.1, dispatched))], timeout=seconds + 120)
    task = q.get(timeout=60)["task"]
    courier.join(10)
    return {"background_sent": bg["sent"], "orders": orders["orders"],
            "order_to_task": percentiles(task), "status_to_ack": percentiles(orders["ack"])}


def dispatch(broker: Running, *, seconds: float, background_rate: int = 1000) -> Result:
    """The latency workload with the shop registered nearest_idle: the gateway picks the courier of every order
    (fieldgate only; the bare brokers have no dispatch)."""
    if broker.name != "fieldgate" or broker.data_dir is None:
        return {"skipped": "dispatch is the gateway's own"}
    data = ["--data-dir", str(broker.data_dir)]
    shop = ["shops", "add", "bench", "--name", "Bench", "--lat", str(SHOP[0]), "--lon", str(SHOP[1]),
            "--assignment", "nearest_idle"]
    for args in (shop, ["couriers", "add", "lc", "--name", "Bench Rider", "--shop", "bench"]):
        subprocess.run([sys.executable, "-m", "cli.main", *args, *data], check=True, capture_output=True, cwd=ROOT)
    return latency(broker, seconds=seconds, background_rate=background_rate, dispatched=True)


# ---------------------------------------------------------------- 3. fan-out


async def _terminals(port: int, first: int, count: int, rounds: int, ready: Any) -> Result:
    latencies: dict[int, list[float]] = {}

    def on_message(topic: str, payload: bytes) -> None:
        sent = sent_at(payload)
        latencies.setdefault(sent, []).append((time.time_ns() - sent) / 1e6)

    clients = []
    for i in range(count):
        c = Client(on_message)
        await c.connect(port, f"bench-terminal-{first + i}")
        await c.subscribe("shops/fan/orders")
        clients.append(c)
    ready.set()
    deadline = time.monotonic() + 60 + rounds
    while time.monotonic() < deadline and (len(latencies) < rounds or
                                           sum(len(v) for v in latencies.values()) < rounds * count):
        await asyncio.sleep(0.05)
    for c in clients:
        await c.close()
    return latencies


async def _announcer(port: int, gateway: bool, rounds: int) -> Result:
    client = Client()
    await client.connect(port, "bench-announcer")
    for n in range(rounds):
        body = {"order_id": f"F{n:04d}-{random.randrange(1 << 30)}", "shop_id": "fan",
                "recipient": {"name": "Li Na", "phone": "+8613800000000"}, "address": {"text": "Sunshine 5-3-401"},
                "items": [{"name": "roses", "qty": 11}], "notes": stamp()}
        if gateway:
            await client.publish("orders/in", json.dumps(body).encode(), wait=True)
        else:
            await client.publish("shops/fan/orders", padded(body), wait=True)
        await asyncio.sleep(0.2)
    await client.close()
    return {}


def fanout(broker: Running, *, subscribers: int = 200, rounds: int = 20) -> Result:
    """One order event to 200 shop-terminal subscribers, 20 times: latency to every and to the last one."""
    ctx = mp.get_context("fork")
    half = subscribers // 2
    readies = [ctx.Event(), ctx.Event()]
    queues = [ctx.Queue(), ctx.Queue()]
    procs = [ctx.Process(target=_run_process, args=(_terminals, (broker.port, k * half, half, rounds, readies[k]),
                                                    queues[k]), daemon=True) for k in range(2)]
    for p in procs:
        p.start()
    for r in readies:
        r.wait(60)
    in_processes([(_announcer, (broker.port, broker.name == "fieldgate", rounds))], timeout=120)
    merged: dict[int, list[float]] = {}
    for q in queues:
        for sent, values in q.get(timeout=150).items():
            merged.setdefault(sent, []).extend(values)
    for p in procs:
        p.join(10)
    every = [v for values in merged.values() for v in values]
    return {"subscribers": subscribers, "rounds": len(merged), "deliveries": len(every),
            "every": percentiles(every), "last_subscriber": percentiles([max(v) for v in merged.values()])}


# ---------------------------------------------------------------- 4. many idle connections


async def _idlers(port: int, first: int, count: int, period: float, seconds: float, ready: Any,
                  go: Any) -> Result:
    clients: list[Client] = []
    for i in range(count):
        c = Client()
        await c.connect(port, f"bench-idle-{first + i}")
        clients.append(c)
    ready.set()
    while not go.is_set():
        await asyncio.sleep(0.05)

    async def beat(i: int, c: Client) -> None:
        await asyncio.sleep(random.uniform(0, period))
        seq = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            seq += 1
            await c.publish(f"couriers/i{first + i}/gps", fix("ix", seq))
            await asyncio.sleep(period)

    await asyncio.gather(*(beat(i, c) for i, c in enumerate(clients)))
    for c in clients:
        await c.close()
    return {}


async def _idle_watch(port: int, seconds: float, ready: Any) -> Result:
    latencies: list[float] = []
    client = Client(lambda topic, payload: latencies.append((time.time_ns() - sent_at(payload)) / 1e6))
    await client.connect(port, "bench-idle-watch")
    await client.subscribe("couriers/+/gps")
    ready.set()
    await asyncio.sleep(seconds + 5)
    await client.close()
    return {"latencies": latencies}


def connections(broker: Running, *, count: int, period: float = 30.0, seconds: float = 35.0,
                processes: int = 4) -> Result:
    """`count` idle courier connections, each publishing a fix every `period` s: RSS and latency."""
    ctx = mp.get_context("fork")
    per = count // processes
    watch_ready, go = ctx.Event(), ctx.Event()
    readies = [ctx.Event() for _ in range(processes)]
    watch_q = ctx.Queue()
    watch = ctx.Process(target=_run_process, args=(_idle_watch, (broker.port, seconds, watch_ready), watch_q),
                        daemon=True)
    watch.start()
    watch_ready.wait(30)
    rss_before = broker.rss_bytes()
    started = time.monotonic()
    qs = [ctx.Queue() for _ in range(processes)]
    procs = [ctx.Process(target=_run_process, args=(_idlers, (broker.port, k * per, per, period, seconds, readies[k],
                                                                go), qs[k]), daemon=True) for k in range(processes)]
    for p in procs:
        p.start()
    connected = all(r.wait(600) for r in readies)
    connect_s = time.monotonic() - started
    rss_connected = broker.rss_bytes()
    go.set()
    for q in qs:
        q.get(timeout=seconds + 600)
    for p in procs:
        p.join(10)
    latencies = watch_q.get(timeout=60)["latencies"]
    watch.join(10)
    return {"connections": per * processes if connected else 0, "connect_seconds": round(connect_s, 1),
            "rss_idle_mb": round(rss_before / 2**20, 1), "rss_connected_mb": round(rss_connected / 2**20, 1),
            "rss_end_mb": round(broker.rss_bytes() / 2**20, 1), "fix_latency": percentiles(latencies)}


# ---------------------------------------------------------------- 5. ingest from C publishers


def fix_lines(courier: str, count: int) -> bytes:
    """`count` fixes of one courier (tst 1…count), one a line: mosquitto_pub -l's input."""
    return b"".join(fix(courier, seq) + b"\n" for seq in range(1, count + 1))


def _pub_command(binary: str, port: int, topic: str, client_id: str, inflight: int) -> list[str]:
    return [binary, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-M", str(inflight), "-l", "-t", topic,
            "-i", client_id]


def _startup_seconds(command: list[str]) -> float:
    """mosquitto_pub's own cost with nothing to send: connect, disconnect, and the 100 ms it sleeps unless the
    CONNACK beats it to its first look (the median of five)."""
    runs = []
    for _ in range(5):
        started = time.monotonic()
        subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=True)
        runs.append(time.monotonic() - started)
    return statistics.median(runs)


def cingest(broker: Running, *, per_publisher: int, publishers: int = 4, inflight: int = 1000,
            timeout: float = 600.0, count_acks: bool = False) -> Result:
    """`publishers` C clients (`mosquitto_pub -l -q 1 -M inflight`), one courier each, publish `per_publisher`
    fixes from a file as fast as the broker PUBACKs them; on fieldgate, also how fast the fixes become rows.

    mosquitto_pub -l reads every line, queues what exceeds its in-flight window, and on the PUBACK of the last
    message disconnects and exits (MQTT 3.1.1 PUBACKs come in order, so that one is the last): the wall time from
    starting the publishers to the last exit covers every PUBACK. `count_acks` also has them log each PUBACK
    (`-d`, which costs them time) and counts those. On fieldgate, `apply_lag_s` is the time from the last
    publisher's exit to the last fix committed to fieldgate.db, `backlog_at_exit` the fixes PUBACKed but not
    yet committed at that exit, and `backlog_bound` the gateway's bound on that backlog, if it has one."""
    binary = mosquitto_pub_binary()
    if binary is None:
        return {"skipped": "mosquitto_pub is not installed and could not be installed here "
                           "(apt-get install mosquitto-clients)"}
    total = per_publisher * publishers
    startup = _startup_seconds(_pub_command(binary, broker.port, "bench/startup", "bench-cpub-startup", inflight))
    run = f"{random.randrange(1 << 20):05x}"  # new couriers each run: a broker used before counts only new rows
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as files:
        commands, inputs, logs = [], [], []
        for i in range(publishers):
            courier = f"cb{run}-{i:02d}"
            (Path(tmp) / f"{courier}.txt").write_bytes(fix_lines(courier, per_publisher))
            inputs.append(files.enter_context((Path(tmp) / f"{courier}.txt").open("rb")))
            logs.append(files.enter_context((Path(tmp) / f"{courier}.log").open("w+b")))
            commands.append([*_pub_command(binary, broker.port, f"couriers/{courier}/gps", f"bench-cpub-{courier}",
                                           inflight), *(["-d"] if count_acks else [])])
        db = None if broker.data_dir is None else files.enter_context(contextlib.closing(
            sqlite3.connect(f"file:{broker.data_dir / 'fieldgate.db'}?mode=ro", uri=True)))
        before = 0 if db is None else db.execute("SELECT COUNT(*) FROM gps_fixes").fetchone()[0]
        exits: dict[int, float] = {}

        def wait(i: int, proc: subprocess.Popen[bytes]) -> None:
            proc.wait()
            exits[i] = time.monotonic()

        started = time.monotonic()
        procs = [subprocess.Popen(c, stdin=f, stdout=log, stderr=subprocess.STDOUT)
                 for c, f, log in zip(commands, inputs, logs, strict=True)]
        waiters = [threading.Thread(target=wait, args=(i, p), daemon=True) for i, p in enumerate(procs)]
        for t in waiters:
            t.start()
        rows, last_row_at, backlog_at_exit = 0, started, None
        while time.monotonic() < started + timeout:
            if db is not None:
                count = db.execute("SELECT COUNT(*) FROM gps_fixes").fetchone()[0] - before
                if count > rows:
                    rows, last_row_at = count, time.monotonic()
            if len(exits) == publishers:
                if backlog_at_exit is None:
                    backlog_at_exit = total - rows
                if db is None or rows >= total:
                    break
            time.sleep(0.02)
        for p in procs:
            if p.poll() is None:
                p.kill()
        for t in waiters:
            t.join(10)
        outputs = []
        for log in logs:
            log.seek(0)
            outputs.append(log.read().decode(errors="replace"))
    if failed := {i: (p.returncode, outputs[i][-300:]) for i, p in enumerate(procs) if p.returncode != 0}:
        raise RuntimeError(f"mosquitto_pub failed or timed out: {failed}")
    last_exit = max(exits.values())
    seconds = last_exit - started
    result: Result = {"messages": total, "publishers": publishers, "inflight": inflight,
                      "seconds": round(seconds, 3), "acked_per_s": round(total / seconds),
                      "startup_s": round(startup, 3), "acked_per_s_net": round(total / max(seconds - startup, 1e-3))}
    if count_acks:
        result["pubacked"] = sum(out.count("received PUBACK") for out in outputs)
    if db is not None:
        applied = rows / max(last_row_at - started, 1e-3)
        bound = BrokerSettings().gateway_backlog  # the broker stops reading publishers above this backlog
        result.update({"rows_applied": rows, "applied_per_s": round(applied),
                       "apply_lag_s": round(max(0.0, last_row_at - last_exit), 3), "backlog_at_exit": backlog_at_exit,
                       "backlog_bound": bound, "lag_bound_s": round(bound / applied, 3)})
    return result
