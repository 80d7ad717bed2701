"""Scale: how fast 1, 2 and 3 `fieldgate bridge` instances apply a backlog on RabbitMQ with a shared PostgreSQL.

    python -m bench scale            # 20,000 fixes of 32 couriers, for 1, 2 and 3 bridges
    python -m bench scale --quick    # 4,000 fixes

One RabbitMQ node and one PostgreSQL (`bench.engines`, Debian's packages), a fresh database per
run. The bridges start and split the inbound partitions between them; then they are paused
(SIGSTOP), the fixes are published by C publishers (Debian's mosquitto_pub) to RabbitMQ's MQTT
listener, where they wait in the partition queues, and the bridges are resumed (SIGCONT): the
figure is fixes applied (rows committed in PostgreSQL) per second, from the resume to the last
row. Pausing keeps RabbitMQ's own MQTT ingest out of the figure: it is the bridges' rate. Every
process shares the machine's cores, so the figure says what one machine's cores give, not what
machines of their own would.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench import engines
from bench.workloads import fix_lines, mosquitto_pub_binary
from gateway.bridge.amqp import PARTITIONS
from gateway.store.postgres import check_store

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
COURIERS = 32


def _bridge(node: engines.RabbitNode, url: str, data: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FIELDGATE_STORAGE_URL": url, "PYTHONUNBUFFERED": "1"}
    env.pop("FIELDGATE_CONFIG", None)
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "cli.main", "bridge", "--engine", node.amqp_url, "--data-dir",
                                 str(data), "--http-port", "0"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def run_one(node: engines.RabbitNode, server: str, bridges: int, fixes: int, tmp: Path) -> dict[str, float]:
    """Apply `fixes` fixes with `bridges` bridges; their rate."""
    url = engines.new_database(server, f"scale{bridges}")
    binary = mosquitto_pub_binary()
    if binary is None:
        raise engines.EngineMissing("mosquitto_pub is not installed (apt-get install mosquitto-clients)")
    procs = [_bridge(node, url, tmp / "data", tmp / f"bridge{bridges}-{i}.log") for i in range(bridges)]
    try:
        fair = -(-PARTITIONS // bridges)
        engines.wait_until(lambda: (c := check_store(url, PARTITIONS)).bridges == bridges
                           and c.partitions_owned == PARTITIONS and c.most_by_one == fair,
                           f"{bridges} bridges sharing every partition fairly", 120)
        for p in procs:
            p.send_signal(signal.SIGSTOP)
        per = fixes // COURIERS
        publishers = []
        with contextlib.ExitStack() as files:
            for i in range(COURIERS):
                courier = f"sc{bridges}-{i:02d}"
                lines = tmp / f"{courier}.txt"
                lines.write_bytes(fix_lines(courier, per))
                publishers.append(subprocess.Popen(
                    [binary, "-h", "127.0.0.1", "-p", str(node.mqtt_port), "-q", "1", "-M", "1000", "-l", "-t",
                     f"couriers/{courier}/gps", "-i", f"scale-{courier}"],
                    stdin=files.enter_context(lines.open("rb")), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
            for pub in publishers:
                pub.wait(300)
        total = per * COURIERS
        with psycopg.connect(url, autocommit=True) as conn:
            count = lambda: conn.execute("SELECT count(*) FROM gps_fixes").fetchone()[0]  # noqa: E731
            resumed = time.monotonic()
            for p in procs:
                p.send_signal(signal.SIGCONT)
            engines.wait_until(lambda: count() >= total, f"{total} fixes applied", 600)
            elapsed = time.monotonic() - resumed
        return {"bridges": bridges, "fixes": total, "seconds": round(elapsed, 2), "fixes_per_s": round(total / elapsed)}
    finally:
        for p in procs:
            p.send_signal(signal.SIGCONT)
            p.terminate()
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(30)
            if p.poll() is None:
                p.kill()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4,000 fixes instead of 20,000")
    parser.add_argument("--bridges", default="1,2,3", help="comma-separated instance counts")
    args = parser.parse_args(argv)
    fixes = 4_000 if args.quick else 20_000
    rows = []
    with tempfile.TemporaryDirectory() as tmp, engines.postgres() as server, engines.rabbitmq(1) as cluster:
        for bridges in (int(n) for n in args.bridges.split(",")):
            rows.append(run_one(cluster.nodes[0], server, bridges, fixes, Path(tmp)))
            print(f"{bridges} bridge(s): {rows[-1]['fixes']:,} fixes in {rows[-1]['seconds']} s = "
                  f"{rows[-1]['fixes_per_s']:,} fixes/s", file=sys.stderr)
    out = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
           "partitions": PARTITIONS, "runs": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"{'bridges':>8} {'fixes':>8} {'seconds':>8} {'fixes/s':>8}")
    for r in rows:
        print(f"{r['bridges']:>8} {r['fixes']:>8,} {r['seconds']:>8} {r['fixes_per_s']:>8,}")
    print(f"wrote {RESULTS / 'scale.json'}", file=sys.stderr)
    return 0
