"""Nearest-idle assignment is a pure function: properties over any set of couriers, places and times."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.assignment import Candidate, choose
from gateway.core.geo import haversine_m, offset

SHOP = (31.2304, 121.4737)
NOW = 1_800_000_000
MAX_AGE = 300


@st.composite
def candidates(draw: st.DrawFn) -> list[Candidate]:
    out = []
    for n in range(draw(st.integers(0, 8))):
        has_fix = draw(st.booleans())
        north, east = draw(st.floats(-5000, 5000)), draw(st.floats(-5000, 5000))
        lat, lon = offset(*SHOP, north, east)
        out.append(Candidate(
            courier_id=f"c{draw(st.integers(0, 30)):02d}-{n}",
            online=draw(st.booleans()),
            fix_lat=lat if has_fix else None, fix_lon=lon if has_fix else None,
            fix_tst=NOW - draw(st.integers(0, 2 * MAX_AGE)) if has_fix else None,
            active=draw(st.integers(0, 4)), max_active=draw(st.integers(1, 4)),
        ))
    return out


def rank(c: Candidate, nearest_first: bool) -> tuple[float, float, str]:
    d = haversine_m(c.fix_lat, c.fix_lon, *SHOP)  # type: ignore[arg-type]
    return (d, c.active, c.courier_id) if nearest_first else (c.active, d, c.courier_id)


@given(candidates(), st.sets(st.integers(0, 8)), st.booleans(), st.randoms())
def test_the_choice_is_eligible_best_ranked_and_independent_of_input_order(pool, banned_idx, nearest_first, rnd):
    banned = {c.courier_id for i, c in enumerate(pool) if i in banned_idx}
    chosen = choose(pool, lat=SHOP[0], lon=SHOP[1], now=NOW, max_fix_age=MAX_AGE, exclude=banned,
                    nearest_first=nearest_first)
    eligible = [c for c in pool if c.courier_id not in banned and c.online and c.fix_tst is not None
                and NOW - c.fix_tst <= MAX_AGE and c.active < c.max_active]
    if not eligible:
        assert chosen is None
        return
    assert chosen in eligible
    assert all(rank(chosen, nearest_first) <= rank(c, nearest_first) for c in eligible)
    shuffled = list(pool)
    rnd.shuffle(shuffled)
    assert choose(shuffled, lat=SHOP[0], lon=SHOP[1], now=NOW, max_fix_age=MAX_AGE, exclude=banned,
                  nearest_first=nearest_first) == chosen


@given(candidates())
def test_nobody_offline_stale_full_or_excluded_is_ever_chosen(pool):
    chosen = choose(pool, lat=SHOP[0], lon=SHOP[1], now=NOW, max_fix_age=MAX_AGE)
    if chosen is not None:
        assert chosen.online and chosen.fix_tst is not None and NOW - chosen.fix_tst <= MAX_AGE
        assert chosen.active < chosen.max_active
        assert choose(pool, lat=SHOP[0], lon=SHOP[1], now=NOW, max_fix_age=MAX_AGE,
                      exclude=[chosen.courier_id]) != chosen


def test_fewest_active_orders_wins_over_distance_and_distance_over_the_id():
    near_busy = Candidate("a", True, *offset(*SHOP, 100, 0), NOW, active=2, max_active=3)
    far_idle = Candidate("b", True, *offset(*SHOP, 3000, 0), NOW, active=0, max_active=3)
    far_idle_too = Candidate("a2", True, *offset(*SHOP, 3000, 0), NOW, active=0, max_active=3)
    farther = Candidate("0", True, *offset(*SHOP, 3500, 0), NOW, active=0, max_active=3)
    pool = [near_busy, far_idle, far_idle_too, farther]
    random.Random(1).shuffle(pool)
    assert choose(pool, lat=SHOP[0], lon=SHOP[1], now=NOW, max_fix_age=MAX_AGE).courier_id == "a2"
    assert choose(pool, lat=SHOP[0], lon=SHOP[1], now=NOW, max_fix_age=MAX_AGE, nearest_first=True).courier_id == "a"
