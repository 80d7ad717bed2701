"""The benchmark's own logic: stamping payloads, computing ratios, and the C-publisher ingest on each broker at a
small size (the full runs are `python -m bench`)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bench import brokers
from bench import workloads as bench_workloads
from bench.client import PAYLOAD_BYTES, padded, sent_at, stamp
from bench.report import ratios
from bench.workloads import fix_lines


def test_payloads_are_200_bytes_and_carry_their_send_time_through_rewrapping():
    body = padded({"_type": "location", "lat": 1.0, "lon": 2.0, "tst": 1, "t": stamp()})
    assert len(body) == PAYLOAD_BYTES
    wrapped = json.dumps({"kind": "status_changed", "reason": json.loads(body)["t"]}).encode()
    assert sent_at(wrapped) == sent_at(body) > 0


def test_ratios_compare_fieldgate_with_each_baseline_where_both_have_the_figure():
    workloads = {"ingest": {"fieldgate": {"delivered_per_s": 6000}, "amqtt": {"delivered_per_s": 3000},
                            "mosquitto": {"error": "boom"}}}
    assert ratios(workloads) == {"ingest: delivered msg/s (QoS 1)": {"fieldgate/amqtt": 2.0}}


def test_c_publishers_read_one_fix_a_line_in_tst_order():
    lines = fix_lines("cb00", 3).split(b"\n")
    assert lines[-1] == b"" and len(lines) == 4
    assert [json.loads(line)["tst"] for line in lines[:-1]] == [1, 2, 3]
    assert all(len(line) == PAYLOAD_BYTES for line in lines[:-1])


def test_cingest_figures_are_compared_with_each_baseline():
    workloads = {"cingest": {"fieldgate": {"acked_per_s": 20000, "applied_per_s": 10000},
                             "amqtt": {"acked_per_s": 10000}, "mosquitto": {"acked_per_s": 100000}}}
    assert ratios(workloads) == {"C ingest (4 mosquitto_pub): PUBACKed msg/s": {"fieldgate/amqtt": 2.0,
                                                                                 "fieldgate/mosquitto": 0.2}}


def test_cingest_is_skipped_with_the_reason_where_mosquitto_pub_is_missing(monkeypatch):
    monkeypatch.setattr(bench_workloads, "mosquitto_pub_binary", lambda: None)
    assert "mosquitto-clients" in bench_workloads.cingest(None, per_publisher=1)["skipped"]


@pytest.mark.parametrize("name", ["fieldgate", "amqtt", pytest.param("mosquitto", marks=pytest.mark.mosquitto)])
def test_cingest_counts_every_puback_and_on_fieldgate_every_fix_applied(name, tmp_path):
    needs = {"mosquitto_pub": "mosquitto-clients", **({"mosquitto": "mosquitto"} if name == "mosquitto" else {})}
    for binary, package in needs.items():
        if shutil.which(binary) is None and not Path("/usr/sbin", binary).exists():
            if os.environ.get("CI"):
                pytest.fail(f"{binary} is not installed; .ci/run installs Debian's {package} package")
            pytest.skip(f"{binary} is not installed (apt-get install {package})")
    running = brokers.start(name, tmp_path)
    if isinstance(running, str):
        pytest.skip(running)
    try:
        result = bench_workloads.cingest(running, per_publisher=150, count_acks=True)
    finally:
        running.stop()
    assert result["messages"] == result["pubacked"] == 600
    assert result["acked_per_s"] > 0 and result["startup_s"] > 0
    if name == "fieldgate":
        assert result["rows_applied"] == 600 and result["applied_per_s"] > 0
        assert result["apply_lag_s"] >= 0 and 0 <= result["backlog_at_exit"] <= 600
        assert "backlog_bound" in result and "lag_bound_s" in result
    else:
        assert "rows_applied" not in result
