"""Speed, detour and ETA: pure functions, with a synthetic courier riding a straight line at 18 km/h."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conftest import order
from hypothesis import given
from hypothesis import strategies as st

from gateway.core import eta
from gateway.core.geo import haversine_m, offset
from gateway.core.lifecycle import EtaRules, Fix, OrderRecord, track
from gateway.core.models import Order, Status

DOOR = (31.2304, 121.4737)


def test_speed_is_the_default_until_enough_samples_and_never_below_the_minimum():
    speed = eta.Speed()
    assert eta.effective_kmh(speed, default_kmh=15, min_kmh=8) == 15
    for n, vel in enumerate([30.0, 30.0, 0.0, 0.0, 0.0, 0.0, 0.0]):
        speed = eta.next_speed(speed, None, eta.Point(0, 0, n, vel))
    assert speed.samples == 7 and speed.kmh < 8
    assert eta.effective_kmh(speed, default_kmh=15, min_kmh=8) == 8  # waiting at a light is not 0 km/h


def test_without_vel_the_speed_comes_from_distance_over_time_and_gps_jumps_are_ignored():
    a = eta.Point(*DOOR, tst=1000)
    b = eta.Point(*offset(*DOOR, 100, 0), tst=1020)  # 100 m in 20 s: 18 km/h
    speed = eta.next_speed(eta.Speed(), a, b)
    assert abs(speed.kmh - 18) < 0.1 and speed.samples == 1
    jump = eta.Point(*offset(*DOOR, 5000, 0), tst=1030)  # 5 km in 10 s
    assert eta.next_speed(speed, b, jump) == speed
    stale = eta.Point(*offset(*DOOR, 200, 0), tst=1020 + eta.SAMPLE_MAX_GAP_SECONDS + 1)
    assert eta.next_speed(speed, b, stale) == speed


@given(st.floats(1.0, eta.MAX_DETOUR), st.floats(0, 5000), st.floats(-5000, 5000))
def test_the_detour_stays_between_1_and_the_maximum(current, path, gained):
    assert 1.0 <= eta.next_detour(current, path, gained) <= eta.MAX_DETOUR


def test_a_straight_track_at_18_kmh_from_3_km_is_estimated_within_20_percent_after_five_fixes():
    """The ETA method as the gateway applies it (see also tests/test_dispatch.py, through the broker)."""
    t0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    rules = EtaRules(detour_factor=1.3, delay_step=timedelta(minutes=10), arrival_radius_m=500)
    door = Order.model_validate(order(window=None, address={"text": "the door", "lat": DOOR[0], "lon": DOOR[1]}))
    record = OrderRecord(order=door, status=Status.picked_up, progress=Status.picked_up, courier_id="c7",
                         location=None, created_at=t0, updated_at=t0)
    speed, last = eta.Speed(), None
    for n in range(5):  # a fix every 30 s; OwnTracks' vel omitted, so speed comes from the track
        ridden = n * 150.0  # 18 km/h = 5 m/s
        lat, lon = offset(*DOOR, 3000 - ridden, 0)
        fix = eta.Point(lat, lon, int(t0.timestamp()) + 30 * n)
        speed = eta.next_speed(speed, last, fix)
        last = fix
        kmh = eta.effective_kmh(speed, default_kmh=15, min_kmh=8)
        record = track(record, Fix(lat=lat, lon=lon, tst=fix.tst), kmh, rules, t0 + timedelta(seconds=30 * n)).record
    remaining = haversine_m(lat, lon, *DOOR)
    truth = remaining / 5.0
    assert abs(record.tracking.eta_seconds - truth) <= 0.2 * truth, (record.tracking, truth)
