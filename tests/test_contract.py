"""The topic contract: routing of inbound topics and where errors go back."""

from __future__ import annotations

import pytest

from gateway.core.contract import INBOUND_FILTERS, Kind, parse_inbound
from gateway.errors import UnknownTopic


@pytest.mark.parametrize(
    ("topic", "kind", "errors"),
    [
        ("orders/in", Kind.order, "ordersys/errors"),
        ("shops/rose/commands", Kind.command, "shops/rose/errors"),
        ("couriers/c7/receipts", Kind.receipt, "couriers/c7/errors"),
        ("couriers/c7/status", Kind.status, "couriers/c7/errors"),
        ("couriers/c7/gps", Kind.gps, "couriers/c7/errors"),
        ("couriers/c7/presence", Kind.presence, "couriers/c7/errors"),
        ("owntracks/c7/pixel", Kind.owntracks, "couriers/c7/errors"),
    ],
)
def test_inbound_topics_route_to_their_kind_and_errors_topic(topic, kind, errors):
    route = parse_inbound(topic)
    assert route.kind == kind and route.errors_topic == errors


@pytest.mark.parametrize(
    "topic",
    ["orders/out", "couriers/c7/tasks", "couriers/c7", "owntracks/c7/pixel/event", "shops//commands",
     "couriers/c 7/status", "", "/orders/in"],
)
def test_other_topics_are_not_routed(topic):
    with pytest.raises(UnknownTopic, match="not part of the fieldgate topic contract"):
        parse_inbound(topic)


def test_every_subscription_filter_matches_a_routed_topic():
    for f in INBOUND_FILTERS:
        assert parse_inbound(f.replace("+", "x1")).kind
