"""The benchmark's own logic: stamping payloads and computing ratios (the brokers run in `python -m bench`)."""

from __future__ import annotations

import json

from bench.client import PAYLOAD_BYTES, padded, sent_at, stamp
from bench.report import ratios


def test_payloads_are_200_bytes_and_carry_their_send_time_through_rewrapping():
    body = padded({"_type": "location", "lat": 1.0, "lon": 2.0, "tst": 1, "t": stamp()})
    assert len(body) == PAYLOAD_BYTES
    wrapped = json.dumps({"kind": "status_changed", "reason": json.loads(body)["t"]}).encode()
    assert sent_at(wrapped) == sent_at(body) > 0


def test_ratios_compare_fieldgate_with_each_baseline_where_both_have_the_figure():
    workloads = {"ingest": {"fieldgate": {"delivered_per_s": 6000}, "amqtt": {"delivered_per_s": 3000},
                            "mosquitto": {"error": "boom"}}}
    assert ratios(workloads) == {"ingest: delivered msg/s (QoS 1)": {"fieldgate/amqtt": 2.0}}
