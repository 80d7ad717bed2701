"""`fieldgate simulate`: the same day for the same seed, and a small day played against a real gateway."""

from __future__ import annotations

import json

from conftest import fieldgate

from gateway.simulate import make_plan

SMALL = {"shops": 1, "couriers": 3, "orders": 5, "seed": 57, "scale": 100.0, "minutes": 0.1}


def test_the_plan_is_the_same_for_the_same_seed_and_another_for_another():
    assert make_plan(**SMALL) == make_plan(**SMALL)
    assert make_plan(**{**SMALL, "seed": 58}) != make_plan(**SMALL)
    plan = make_plan(**SMALL)
    assert len(plan.orders) == 5 and len(plan.couriers) == 3 and [o.at for o in plan.orders] == sorted(
        o.at for o in plan.orders)
    # seed 57 plans a refusal, a breakdown and an address change, so the small day below sees all three
    assert any(o.refused for o in plan.orders) and any(o.breakdown for o in plan.orders)
    assert any(o.change_at is not None for o in plan.orders)


def test_a_small_day_delivers_everything_and_loses_nothing(spawn):
    gw = spawn()
    args = [f"--{k}={v}" for k, v in SMALL.items()]
    done = fieldgate("simulate", *args, "--json", "--broker", f"mqtt://127.0.0.1:{gw.port}", "--data-dir",
                     str(gw.data_dir), timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["lost"] == 0 and figures["orders"] == 5
    assert figures["delivered"] == 5, figures
    assert figures["refused"] >= 1 and figures["exceptions"] >= 1 and figures["reassigned"] >= 1, figures
    assert figures["receipt_latency_ms_p50"] is not None and figures["eta_error_p50"] is not None
    shops = [json.loads(line) for line in fieldgate("shops", "list", "--json", "--data-dir",
                                                    str(gw.data_dir)).stdout.splitlines()]
    assert [s["assignment"] for s in shops] == ["nearest_idle"]
