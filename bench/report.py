"""Figures → ratios, a rich table, bench/results/latest.json and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"

#: (workload, path to the figure, label, higher is better)
FIGURES: list[tuple[str, tuple[str, ...], str, bool]] = [
    ("ingest", ("delivered_per_s",), "ingest: delivered msg/s (QoS 1)", True),
    ("ingest", ("acked_per_s",), "ingest: PUBACKed msg/s", True),
    ("ingest", ("rows_per_s",), "ingest: rows committed/s (fieldgate)", True),
    ("cingest", ("acked_per_s",), "C ingest (4 mosquitto_pub): PUBACKed msg/s", True),
    ("cingest", ("acked_per_s_net",), "C ingest: PUBACKed msg/s less mosquitto_pub's startup", True),
    ("cingest", ("applied_per_s",), "C ingest: fixes applied/s (fieldgate)", True),
    ("cingest", ("apply_lag_s",), "C ingest: apply lag after the publishers, s", False),
    ("cingest", ("backlog_at_exit",), "C ingest: fixes not yet applied then", False),
    ("cingest", ("lag_bound_s",), "C ingest: apply lag bound (backlog bound ÷ applied/s), s", False),
    ("latency", ("order_to_task", "p50_ms"), "order → task p50 ms", False),
    ("latency", ("order_to_task", "p99_ms"), "order → task p99 ms", False),
    ("latency", ("order_to_task", "max_ms"), "order → task max ms", False),
    ("latency", ("status_to_ack", "p50_ms"), "status → ack p50 ms", False),
    ("latency", ("status_to_ack", "p99_ms"), "status → ack p99 ms", False),
    ("dispatch", ("order_to_task", "p50_ms"), "order → auto-assigned task p50 ms", False),
    ("dispatch", ("order_to_task", "p99_ms"), "order → auto-assigned task p99 ms", False),
    ("fanout", ("every", "p99_ms"), "fan-out to 200: p99 ms", False),
    ("fanout", ("last_subscriber", "p99_ms"), "fan-out: last subscriber p99 ms", False),
    ("connections", ("connections",), "idle connections held", True),
    ("connections", ("rss_connected_mb",), "RSS with them, MB", False),
    ("connections", ("fix_latency", "p99_ms"), "their fixes p99 ms", False),
    ("restart", ("start_to_first_delivery_seconds",), "restart → first delivery, s", False),
]
BROKERS = ("fieldgate", "amqtt", "mosquitto")


def figure(workloads: dict[str, Any], workload: str, broker: str, path: tuple[str, ...]) -> float | None:
    value: Any = workloads.get(workload, {}).get(broker)
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value if isinstance(value, int | float) else None


def ratios(workloads: dict[str, Any]) -> dict[str, dict[str, float]]:
    """fieldgate ÷ amqtt and fieldgate ÷ mosquitto for every figure both have."""
    out: dict[str, dict[str, float]] = {}
    for workload, path, label, _ in FIGURES:
        ours = figure(workloads, workload, "fieldgate", path)
        for other in ("amqtt", "mosquitto"):
            theirs = figure(workloads, workload, other, path)
            if ours is not None and theirs:
                out.setdefault(label, {})[f"fieldgate/{other}"] = round(ours / theirs, 2)
    return out


def print_table(results: dict[str, Any]) -> None:
    table = Table("figure", *BROKERS, "fg/amqtt", "fg/mosq", title=f"fieldgate benchmark, {results['started']}")
    for workload, path, label, _ in FIGURES:
        cells = [figure(results["workloads"], workload, b, path) for b in BROKERS]
        if all(c is None for c in cells):
            continue
        r = results["ratios"].get(label, {})
        table.add_row(label, *("-" if c is None else f"{c:,.2f}" if isinstance(c, float) else f"{c:,}" for c in cells),
                      str(r.get("fieldgate/amqtt", "-")), str(r.get("fieldgate/mosquitto", "-")))
    console = Console(width=140)
    console.print(table)
    for broker, why in results.get("skipped", {}).items():
        console.print(f"[yellow]skipped {broker}[/]: {why}")
    errors = [(w, b, v["error"]) for w, per in results["workloads"].items() for b, v in per.items()
              if isinstance(v, dict) and "error" in v]
    for w, b, e in errors:
        console.print(f"[red]{w} on {b} failed[/]: {e}")
    for w, per in results["workloads"].items():
        for b, v in per.items():
            if isinstance(v, dict) and "skipped" in v:
                console.print(f"[yellow]{w} skipped on {b}[/]: {v['skipped']}")


def write(results: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "latest.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    chart(results, path.with_suffix(".png"))
    return path


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = results["workloads"]
    panels = [
        ("ingest, delivered msg/s (higher is better)", [("delivered", ("ingest", ("delivered_per_s",)))]),
        ("ingest from 4 C publishers, msg/s", [("PUBACKed", ("cingest", ("acked_per_s",))),
                                               ("applied", ("cingest", ("applied_per_s",)))]),
        ("order → courier latency, ms (lower is better)",
         [("p50", ("latency", ("order_to_task", "p50_ms"))), ("p99", ("latency", ("order_to_task", "p99_ms")))]),
        ("fan-out to 200 terminals, ms", [("p50", ("fanout", ("every", "p50_ms"))),
                                          ("p99", ("fanout", ("every", "p99_ms")))]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(20, 4.5))
    for ax, (title, series) in zip(axes, panels, strict=True):
        width = 0.8 / len(series)
        for i, (label, (workload, fig_path)) in enumerate(series):
            values = [figure(w, workload, b, fig_path) or 0 for b in BROKERS]
            ax.bar([x + i * width for x in range(len(BROKERS))], values, width, label=label)
        ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(BROKERS))], BROKERS)
        ax.set_title(title, fontsize=10)
        if len(series) > 1:
            ax.legend()
    fig.suptitle(f"fieldgate vs amqtt vs Mosquitto — {results['started']}, {results['machine']['cpus']} CPUs")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
