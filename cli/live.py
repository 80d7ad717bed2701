"""fieldgate tail / top: the day as it happens, in a terminal.

`tail` follows the store (read-only, beside the running gateway): every timeline entry, refused
message and customer notice, one coloured line each. `top` scrapes the running gateway's /metrics
with the operator token it leaves in the data directory (`local-http.json`) and redraws a dashboard
each second that fits 80x24 (an SSH session on a phone).
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cli.common import ConfigOpt, DataDirOpt, VerboseOpt, console, read_store, settings
from gateway.errors import FieldgateError

#: How often `tail` looks for new rows, in seconds.
TAIL_POLL_SECONDS = 0.25
_STYLES = {"rejection": "bold red", "notice": "cyan", "alert": "bold yellow", "exception": "bold yellow",
           "late_risk": "yellow", "courier_offline": "yellow", "waiting_for_courier": "yellow",
           "rejected_by_courier": "yellow", "created": "bold", "status": "green", "assigned": "green"}


def _clock(stamp: str) -> str:
    """A stored UTC time as local wall-clock time; the date too when it is not today."""
    at = datetime.fromisoformat(stamp).astimezone()
    return at.strftime("%H:%M:%S" if at.date() == datetime.now().astimezone().date() else "%m-%d %H:%M:%S")


def line(row: dict[str, Any]) -> Text:
    """One `tail` line: time, order, shop, courier, then what happened."""
    source = row["source"]
    if source == "event":
        what = row["kind"] if row["kind"] != "status" else f"→ {row['status']}"
        detail = " ".join(p for p in (f"by {row['actor']}" if row["actor"] else "", row["reason"] or "") if p)
        style = _STYLES.get(row["kind"], "")
    elif source == "rejection":
        what, detail, style = "rejected", f"{row['topic']}: {row['reason']}", _STYLES["rejection"]
    else:
        waiting = f" (after quiet hours, {_clock(row['deferred_until'])})" if row["deferred_until"] else ""
        what, detail, style = f"notice {row['kind']}{waiting}", row["text"], _STYLES["notice"]
    head = f"{_clock(row['at'])}  {row['order_id'] or '-':<12} {row['shop_id'] or '-':<8} {row['courier'] or '-':<6}"
    text = Text(head + "  ", style="dim")
    text.append(what, style=style or "bold")
    if detail:
        text.append("  " + detail)
    return text


def tail_cmd(
    shop: Annotated[str | None, typer.Option(help="only this shop's orders")] = None,
    courier: Annotated[str | None, typer.Option(help="only this courier's orders and messages")] = None,
    order: Annotated[str | None, typer.Option(help="only this order")] = None,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, max=1000, help="show this many past lines first")]
    = 10,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Follow what happens — order events, status changes, refused messages, customers' notices — one line each,
    until Ctrl-C. Reads the store beside the running gateway (nothing is changed).

    Example:

        fieldgate tail --shop rose
    """
    store = read_store(settings(config, data_dir, verbose))
    filters = {"shop_id": shop, "courier_id": courier, "order_id": order}
    heads = store.feed_heads()
    past = store.feed(None, limit=lines, **filters)[-lines:] if lines else []
    for row in past:
        console.print(line(row))
    seen = {source: max([head] + [r["id"] for r in past if r["source"] == source]) for source, head in heads.items()}
    console.print(f"[dim]following {escape(store.where)}; Ctrl-C stops[/]")
    try:
        while True:
            for row in store.feed(seen, **filters):
                seen[row["source"]] = max(seen[row["source"]], row["id"])
                console.print(line(row))
            time.sleep(TAIL_POLL_SECONDS)
    except KeyboardInterrupt:
        console.print("[dim]stopped[/]")


# ---------------------------------------------------------------- top


@dataclass
class Scrape:
    """One read of /metrics: every sample by (name, labels), and when it was taken."""

    at: float
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, at: float) -> Scrape:
        from prometheus_client.parser import text_string_to_metric_families

        scrape = cls(at)
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                scrape.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return scrape

    def total(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples whose labels include `labels`."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and want <= set(ls))

    def by(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for (n, ls), v in self.samples.items():
            if n == name:
                key = dict(ls).get(label, "")
                out[key] = out.get(key, 0.0) + v
        return out

    def buckets(self, name: str) -> list[tuple[float, float]]:
        """(upper bound, cumulative count) of a histogram, in order."""
        return sorted((float(dict(ls)["le"]), v) for (n, ls), v in self.samples.items() if n == f"{name}_bucket")


def quantile(q: float, now: list[tuple[float, float]], before: list[tuple[float, float]] | None = None) -> float | None:
    """The q-quantile of a histogram's observations (those since `before`, if given), interpolated linearly within
    its bucket as Prometheus' histogram_quantile does; None with no observations."""
    counts = [(le, c - (dict(before).get(le, 0.0) if before else 0.0)) for le, c in now]
    if not counts or counts[-1][1] <= 0:
        return None
    rank, lower, below = q * counts[-1][1], 0.0, 0.0
    for le, cumulative in counts:
        if cumulative >= rank:
            if le == float("inf"):
                return lower
            inside = cumulative - below
            return lower + (le - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = le, cumulative
    return lower


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.0f} s"


def dashboard(now: Scrape, window: Scrape | None, prev: Scrape | None, url: str) -> Group:
    """The `top` screen: at most 80 columns and 24 lines."""
    dt = (now.at - prev.at) if prev else 0.0

    def rate(name: str) -> str:
        return f"{(now.total(name) - prev.total(name)) / dt:,.1f}" if prev and dt > 0 else "-"

    receipts = now.buckets("fieldgate_task_receipt_seconds")
    earlier = window.buckets("fieldgate_task_receipt_seconds") if window else None
    recent = earlier if earlier and quantile(0.5, receipts, earlier) is not None else None
    traffic = Table.grid(padding=(0, 2))
    traffic.add_row("[b]messages/s[/]", f"in {rate('fieldgate_messages_in_total')}",
                    f"out {rate('fieldgate_messages_out_total')}",
                    f"rejected {rate('fieldgate_rejections_total')}")
    traffic.add_row("[b]receipt[/]", f"p50 {_ms(quantile(0.5, receipts, recent))}",
                    f"p99 {_ms(quantile(0.99, receipts, recent))}", "last minute" if recent else "since start")
    traffic.add_row("[b]queues[/]", f"sessions {now.total('fieldgate_session_queue_depth'):.0f}",
                    f"outbox {now.total('fieldgate_outbox_messages'):.0f}",
                    f"dropped {now.total('fieldgate_session_dropped_total'):.0f}")
    traffic.add_row("[b]webhooks[/]", f"backlog {now.total('fieldgate_webhook_backlog'):.0f}",
                    f"oldest {now.total('fieldgate_webhook_queue_age_seconds'):.0f} s",
                    f"failed {now.total('fieldgate_webhook_deliveries_total', result='failed'):.0f}")
    orders = Table("status", "orders", title="orders", title_justify="left", box=None, padding=(0, 1))
    for status, count in sorted(now.by("fieldgate_orders", "status").items(), key=lambda kv: -kv[1])[:8]:
        orders.add_row(status, f"{count:.0f}")
    people = Table("listener", "role", "conn", title="connections", title_justify="left", box=None, padding=(0, 1))
    for (name, labels), value in sorted(now.samples.items()):
        if name == "fieldgate_connections":
            ls = dict(labels)
            people.add_row(ls.get("listener", ""), ls.get("role", ""), f"{value:.0f}")
    sides = Table.grid(padding=(0, 4))
    sides.add_row(orders, people)
    couriers = now.total("fieldgate_couriers_online")
    stamp = datetime.now().astimezone().strftime("%H:%M:%S")
    head = Text.assemble(("fieldgate top", "bold"), f"  {stamp}  {url}  ", (f"{couriers:.0f} couriers online",
                                                                           "bold green"))
    return Group(head, Text(""), traffic, Text(""), sides)


def _local(data_dir: Path) -> dict[str, Any]:
    from gateway.http.server import local_file

    path = local_file(data_dir)
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise FieldgateError(f"no running gateway with an HTTP side on {data_dir}",
                             hint="Start `fieldgate serve` (http.enabled on), or pass the --data-dir it uses.") \
            from None


def top_cmd(
    iterations: Annotated[int, typer.Option("--iterations", "-n", min=0,
                                            help="stop after this many refreshes [default: 0, until Ctrl-C]")] = 0,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """A live dashboard of the running gateway: couriers online, orders by status, messages/s in and out, queue
    depths, task receipt latency, webhook backlog. Refreshes each second; fits 80x24.

    Example:

        fieldgate top
    """
    import httpx

    local = _local(settings(config, data_dir, verbose).data_dir)
    verify = ssl.create_default_context(cafile=local["cafile"]) if local.get("cafile") else True
    history: list[Scrape] = []
    with httpx.Client(base_url=local["url"], headers={"Authorization": f"Bearer {local['token']}"}, verify=verify,
                      timeout=5) as client, Live(console=console, auto_refresh=False, transient=False) as live:
        try:
            for n in _count(iterations):
                try:
                    response = client.get("/metrics")
                    response.raise_for_status()
                except httpx.HTTPError as exc:
                    raise FieldgateError(f"cannot read {local['url']}/metrics: {exc}",
                                         hint="Is the gateway still running?") from exc
                history = [s for s in history if s.at > time.monotonic() - 61] + [
                    Scrape.parse(response.text, time.monotonic())]
                prev = history[-2] if len(history) > 1 else None
                live.update(dashboard(history[-1], history[0], prev, local["url"]), refresh=True)
                if n + 1 != iterations:
                    time.sleep(1.0)
        except KeyboardInterrupt:
            pass


def _count(limit: int) -> Iterable[int]:
    n = 0
    while limit == 0 or n < limit:
        yield n
        n += 1
