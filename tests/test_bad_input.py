"""Bad input: each gets a Rejection on the sender's errors topic, a dead letter and a log line;
the gateway keeps serving (a good order right after is still acked)."""

from __future__ import annotations

import json

import pytest
from conftest import order

C = "badc"  # the courier and shop of these cases; order ids are unique per case

CASES = {
    "not-json": ("orders/in", b"{'order_id': 'A1'", "ordersys/errors", "not valid JSON"),
    "binary": ("orders/in", b"\x00\xff\xfe", "ordersys/errors", "not valid JSON"),
    "json-array": ("orders/in", b"[1, 2, 3]", "ordersys/errors", "not a valid Order"),
    "wrong-type": ("orders/in", order(items=[{"name": "roses", "qty": "eleven"}]), "ordersys/errors", "items.0.qty"),
    "unknown-field": ("orders/in", order(colour="pink"), "ordersys/errors", "colour: Extra inputs"),
    "missing-field": ("orders/in", {k: v for k, v in order().items() if k != "recipient"}, "ordersys/errors",
                      "recipient: Field required"),
    "bad-window": ("orders/in", order(window={"start": "2026-11-22T11:00:00Z", "end": "2026-11-22T09:00:00Z"}),
                   "ordersys/errors", "window end must be after its start"),
    "topic-chars-in-id": ("orders/in", order(order_id="A/1"), "ordersys/errors", "order_id"),
    "oversized": ("orders/in", order(notes="x" * 70_000), "ordersys/errors", "more than the 65536 allowed"),
    "status-unknown-order": (f"couriers/{C}/status", {"order_id": "NOPE-1", "status": "picked_up"},
                             f"couriers/{C}/errors", "order NOPE-1 is unknown"),
    "status-bad-value": (f"couriers/{C}/status", {"order_id": "NOPE-1", "status": "teleported"},
                         f"couriers/{C}/errors", "status: Input should be"),
    "receipt-unknown-msg": (f"couriers/{C}/receipts", {"msg_ids": ["no-such-task"]}, f"couriers/{C}/errors",
                            "has no task with msg_id no-such-task"),
    "orders-get-not-json": (f"couriers/{C}/orders/get", b"please", f"couriers/{C}/errors", "not valid JSON"),
    "orders-get-unknown-field": (f"couriers/{C}/orders/get", {"all": True}, f"couriers/{C}/errors",
                                 "all: Extra inputs"),
    "state-get-unknown-order": (f"shops/{C}/state/get", {"order_id": "NOPE-6"}, f"shops/{C}/errors",
                                "order NOPE-6 is unknown"),
    "state-get-no-order-id": (f"shops/{C}/state/get", {}, f"shops/{C}/errors", "order_id: Field required"),
    "receipt-empty": (f"couriers/{C}/receipts", {"msg_ids": []}, f"couriers/{C}/errors", "msg_ids"),
    "gps-out-of-range": (f"couriers/{C}/gps", {"_type": "location", "lat": 91, "lon": 0, "tst": 1},
                         f"couriers/{C}/errors", "lat: Input should be less than or equal to 90"),
    "owntracks-missing-tst": (f"owntracks/{C}/phone", {"_type": "location", "lat": 1, "lon": 2},
                              f"couriers/{C}/errors", "tst: Field required"),
    "presence-wrong-type": (f"couriers/{C}/presence", {"online": "maybe"}, f"couriers/{C}/errors", "online"),
    "command-unknown-order": (f"shops/{C}/commands", {"command": "packed", "order_id": "NOPE-2"},
                              f"shops/{C}/errors", "order NOPE-2 is unknown"),
    "command-unknown-verb": (f"shops/{C}/commands", {"command": "teleport", "order_id": "NOPE-2"},
                             f"shops/{C}/errors", "command: Input should be"),
    "chat-not-json": (f"couriers/{C}/chat/in", b"hello there", f"couriers/{C}/errors", "not valid JSON"),
    "chat-unknown-order": (f"shops/{C}/chat/in", {"order_id": "NOPE-3", "msg_id": "m1", "text": "hi"},
                           f"shops/{C}/errors", "order NOPE-3 is unknown"),
    "chat-text-missing": ("ordersys/chat/in", {"order_id": "NOPE-3", "msg_id": "m1", "kind": "text",
                                               "from": "customer"}, "ordersys/errors", "a text message needs text"),
    "chat-read-zero": (f"couriers/{C}/chat/read", {"order_id": "NOPE-3", "read_up_to": 0}, f"couriers/{C}/errors",
                       "read_up_to"),
    "history-limit": (f"shops/{C}/chat/history/get", {"order_id": "NOPE-3", "limit": 100_000}, f"shops/{C}/errors",
                      "limit"),
    "media-not-a-photo": (f"couriers/{C}/media/NOPE-4/proof_of_delivery", b"GIF89a\x01\x00 not accepted",
                          f"couriers/{C}/errors", "not a JPEG, PNG, WebP, OGG/Opus or M4A file"),
    "media-unknown-kind": (f"shops/{C}/media/NOPE-4/selfie", b"\xff\xd8\xff\xe0 jpeg", f"shops/{C}/errors",
                           "unknown media kind 'selfie'"),
    "media-unknown-order": (f"couriers/{C}/media/NOPE-4/chat", b"\xff\xd8\xff\xe0 jpeg", f"couriers/{C}/errors",
                            "order NOPE-4 is unknown"),
    "rating-out-of-range": ("ordersys/ratings/in", {"order_id": "NOPE-5", "stars": 6}, "ordersys/errors", "stars"),
    "rating-unknown-order": ("ordersys/ratings/in", {"order_id": "NOPE-5", "stars": 5}, "ordersys/errors",
                             "order NOPE-5 is unknown"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_rejected_dead_lettered_and_logged(gateway, peers, ids, case):
    topic, payload, errors_topic, reason = CASES[case]
    if isinstance(payload, dict) and "order_id" in payload and payload["order_id"] == "A1001":
        payload = {**payload, "order_id": ids("A")}
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    client = peers(gateway.port, subscribe=(errors_topic, "ordersys/acks"))

    client.publish(topic, raw)

    [rejection] = client.wait_for(errors_topic, lambda r: r["topic"] == topic and reason in r["reason"])
    assert rejection["hint"]
    if topic == "orders/in":
        client.wait_for("ordersys/acks", lambda a: a["kind"] == "rejected" and reason in a["reason"])
    store = gateway.queries
    rows = list(store.query("SELECT topic, payload, size, reason FROM dead_letters WHERE reason = ?",
                               [rejection["reason"]]))
    assert rows and rows[-1]["topic"] == topic and rows[-1]["size"] == len(raw)
    assert bytes(rows[-1]["payload"]) == raw[:4096]
    gateway.wait_log(f"rejected: {rejection['reason']}")

    good = ids("ok")
    client.publish("orders/in", order(order_id=good, courier_id=None))
    client.wait_for("ordersys/acks", lambda a: a["order_id"] == good and a["kind"] == "accepted")
