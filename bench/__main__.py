"""fieldgate vs stock amqtt vs Mosquitto, same machine, same run, same client harness.

    python -m bench                  # every workload, full size (about 10 minutes on 2 cores)
    python -m bench --quick          # every workload, small sizes (about 2 minutes)
    python -m bench ingest latency   # some workloads (dispatch: latency with nearest-idle assignment)
    python -m bench cingest          # ingest from 4 C publishers (mosquitto_pub -l -q 1 -M 1000), 4 x 10,000 fixes
    python -m bench restart          # fieldgate's restart with 100k queued + 100k retained
    python -m bench scale            # 1, 2, 3 bridges on RabbitMQ + PostgreSQL applying a backlog (bench/scale.py)

Prints a table, writes bench/results/latest.json and bench/results/latest.png.

The Python publishers of `ingest` top out near 9-14k msg/s on 2 cores whatever the broker; `cingest`'s C
publishers (Debian's mosquitto_pub) do not, and on fieldgate it also measures fixes applied (rows in
fieldgate.db) per second and the apply lag after the publishers stop.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from bench import brokers, report, restart, scale, workloads
from cli.common import progress

WORKLOADS = ("ingest", "cingest", "latency", "dispatch", "fanout", "connections")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workloads", nargs="*", help=f"which to run: {', '.join(WORKLOADS)}, restart (default: all), "
                        "or scale alone")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--brokers", default=",".join(brokers.NAMES), help="comma-separated subset")
    args, rest = parser.parse_known_args()
    chosen = args.workloads or [*WORKLOADS, "restart"]
    if unknown := set(chosen) - {*WORKLOADS, "restart", "scale"}:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    if chosen == ["restart"]:
        return restart.main(rest)
    if "scale" in chosen:  # its own engines (RabbitMQ, PostgreSQL), not the three brokers: run on its own
        if chosen != ["scale"]:
            parser.error("scale runs on its own: python -m bench scale")
        return scale.main(rest + (["--quick"] if args.quick else []))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # 10,000 connections need the descriptors
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    sizes = {
        "ingest": {"messages": 4_000 if args.quick else 20_000, "publishers": 10},
        "cingest": {"per_publisher": 2_500 if args.quick else 10_000, "publishers": 4},
        "latency": {"seconds": 5 if args.quick else 20},
        "dispatch": {"seconds": 5 if args.quick else 20},
        "fanout": {"subscribers": 200, "rounds": 5 if args.quick else 20},
        "connections": {"count": 1_000 if args.quick else 10_000, "seconds": 10 if args.quick else 35,
                        "period": 5 if args.quick else 30},
    }
    results: dict[str, object] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                  "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                              "platform": platform.platform()},
                                  "sizes": sizes, "skipped": {}, "workloads": {}}
    runs = [(name, broker_name) for name in WORKLOADS if name in chosen for broker_name in args.brokers.split(",")
            if name != "dispatch" or broker_name == "fieldgate"]  # the bare brokers have no dispatch
    with progress() as bar:
        task = bar.add_task("bench runs", total=len(runs))
        for name, broker_name in runs:
            per_broker = results["workloads"].setdefault(name, {})  # type: ignore[attr-defined]
            bar.update(task, description=f"{name} on {broker_name}")
            with tempfile.TemporaryDirectory() as tmp:
                running = brokers.start(broker_name, Path(tmp))
                if isinstance(running, str):
                    results["skipped"][broker_name] = running  # type: ignore[index]
                    bar.console.print(f"skipping {broker_name}: {running}")
                else:
                    try:
                        per_broker[broker_name] = getattr(workloads, name)(running, **sizes[name])
                    except Exception as exc:  # one broker failing a workload is a result, not a crash
                        per_broker[broker_name] = {"error": repr(exc)}
                    finally:
                        running.stop()
            bar.advance(task)
    if "restart" in chosen:
        size = 10_000 if args.quick else 100_000
        results["workloads"]["restart"] = {"fieldgate": restart.run(size, size, 100)}  # type: ignore[index]
    results["ratios"] = report.ratios(results["workloads"])  # type: ignore[arg-type]
    out = report.write(results)
    report.print_table(results)
    print(f"wrote {out} and {out.with_suffix('.png')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
