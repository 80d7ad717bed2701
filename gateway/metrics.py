"""What the running gateway counts, for Prometheus (`GET /metrics`, prometheus-client's text exposition).

Counters and histograms are moved where things happen: the broker's committer (group commits), the
bridge's worker (batches, messages out), the gateway's handlers (messages in, rejections, task
receipts), the webhook sender and the HTTP side. The rest is read when scraped (`Runtime`):
connections by listener and role and the sessions' queues (from the broker's event loop), orders by
status, couriers online, the outbox and the webhook backlog (from fieldgate.db). Names follow
Prometheus' conventions: `fieldgate_…_total` for counters, base units (`_seconds`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.core.contract import TOPICS

if TYPE_CHECKING:
    from gateway.store.queries import StoreFigures

disable_created_metrics()  # no `_created` series: scrapes stay short, and `fieldgate top` reads fewer lines
REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

MESSAGES_IN = Counter("fieldgate_messages_in_total", "Inbound messages the gateway handled (MQTT and HTTP), "
                      "by topic class", ["topic"], registry=REGISTRY)
MESSAGES_OUT = Counter("fieldgate_messages_out_total", "Messages the gateway published, by topic class",
                       ["topic"], registry=REGISTRY)
REJECTIONS = Counter("fieldgate_rejections_total", "Inbound messages refused (a Rejection and a dead letter), "
                     "by reason", ["reason"], registry=REGISTRY)
BROKER_COMMIT = Histogram("fieldgate_broker_commit_seconds", "Duration of the embedded broker's group commits",
                          buckets=_LATENCY, registry=REGISTRY)
READS_PAUSED = Counter("fieldgate_broker_reads_paused_total", "Times the embedded broker stopped reading from "
                       "publishers because broker.gateway_backlog messages waited for the gateway",
                       registry=REGISTRY)
BRIDGE_BATCH = Histogram("fieldgate_bridge_batch_seconds", "Duration of one batch of the bridge (validate, apply, "
                         "commit)", buckets=_LATENCY, registry=REGISTRY)
STORE_RETRIES = Counter("fieldgate_bridge_store_retries_total", "Batches rolled back and run again: a conflict "
                        "with another bridge instance, or the connection to PostgreSQL lost", registry=REGISTRY)
TASK_RECEIPT = Histogram("fieldgate_task_receipt_seconds", "From a task made to the courier's phone's receipt of it",
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
                         registry=REGISTRY)
WEBHOOK_DELIVERIES = Counter("fieldgate_webhook_deliveries_total", "Webhook delivery attempts, by result "
                             "(delivered, retry, failed, gave_up, disabled)", ["result"], registry=REGISTRY)
HTTP_REQUESTS = Counter("fieldgate_http_requests_total", "HTTP requests, by route and status code",
                        ["route", "status"], registry=REGISTRY)


def _topic_classes() -> dict[tuple[str, int, str], str]:
    """(first level, depth, last level or '*') → the contract pattern: an O(1) topic → class lookup."""
    out: dict[tuple[str, int, str], str] = {}
    for t in TOPICS:
        levels = t.pattern.split("/")
        last = "*" if levels[-1].startswith("{") else levels[-1]
        out.setdefault((levels[0], len(levels), last), t.pattern)
    return out


_CLASSES = _topic_classes()


@lru_cache(maxsize=4096)
def topic_class(topic: str) -> str:
    """The contract pattern a topic is an instance of ('couriers/{courier_id}/gps'), or 'other': a label with a
    bounded number of values, whatever ids clients use."""
    levels = topic.split("/")
    first, depth = levels[0], len(levels)
    return _CLASSES.get((first, depth, levels[-1])) or _CLASSES.get((first, depth, "*")) or "other"


def reason_of(exc: Exception) -> str:
    """A rejection's reason label: its error class in snake case (not_json, unknown_order, not_yours, …)."""
    name = type(exc).__name__.removesuffix("Error") or "rejected"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Runtime(Collector):
    """What is read at scrape time from the running parts; each is a callable set by whoever runs that part, and
    skipped while unset (the bridge alone has no embedded broker to ask)."""

    def __init__(self) -> None:
        self.connections: Callable[[], dict[tuple[str, str], int]] | None = None  # (listener, role) -> count
        self.sessions: Callable[[], tuple[int, int]] | None = None  # (queued or in flight, dropped so far)
        self.store: Callable[[], StoreFigures] | None = None

    def collect(self) -> Iterator[Any]:
        if self.connections is not None:
            family = GaugeMetricFamily("fieldgate_connections", "Client connections, by listener and role",
                                       labels=["listener", "role"])
            for (listener, role), count in sorted(self.connections().items()):
                family.add_metric([listener, role], count)
            yield family
        if self.sessions is not None:
            queued, dropped = self.sessions()
            yield GaugeMetricFamily("fieldgate_session_queue_depth", "Messages queued or in flight, all sessions",
                                    value=queued)
            yield CounterMetricFamily("fieldgate_session_dropped", "Messages dropped from full session queues",
                                      value=dropped)
        if self.store is not None:
            figures = self.store()
            orders = GaugeMetricFamily("fieldgate_orders", "Orders, by status", labels=["status"])
            for status, count in sorted(figures.orders_by_status.items()):
                orders.add_metric([status], count)
            yield orders
            yield GaugeMetricFamily("fieldgate_couriers_online", "Couriers with a device online",
                                    value=figures.couriers_online)
            yield GaugeMetricFamily("fieldgate_outbox_messages", "Messages committed and not yet PUBACKed by the "
                                    "broker", value=figures.outbox)
            yield GaugeMetricFamily("fieldgate_webhook_backlog", "Webhook deliveries waiting to be sent",
                                    value=figures.webhook_backlog)
            oldest = figures.oldest_webhook
            age = 0.0 if oldest is None else (datetime.now(UTC) - datetime.fromisoformat(oldest)).total_seconds()
            yield GaugeMetricFamily("fieldgate_webhook_queue_age_seconds", "Age of the oldest waiting webhook "
                                    "delivery", value=max(0.0, age))


RUNTIME = Runtime()
REGISTRY.register(RUNTIME)
