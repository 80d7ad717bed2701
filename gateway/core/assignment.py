"""Who delivers: the nearest-idle rule, as a pure function of the candidates, the place and the time.

A courier is **eligible** for a shop's order when it is one of the shop's couriers, online, its newest
fix is younger than `assignment.max_fix_age_seconds`, it has fewer active orders than its
`max_active`, and it has not refused (or let time out) this order before. Among the eligible, the
order goes to the one with the fewest active orders, then the nearest (great-circle distance from
its newest fix to the shop), then the smallest courier id — so the choice is the same every time
for the same state. A vehicle breakdown is reassigned by distance first (to the courier nearest to
the broken-down one), then load, then id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.core.geo import haversine_m


@dataclass(frozen=True)
class Candidate:
    """One of a shop's couriers, as dispatch sees it."""

    courier_id: str
    online: bool
    fix_lat: float | None
    fix_lon: float | None
    fix_tst: int | None  # epoch seconds of its newest fix
    active: int  # orders assigned to it and not final
    max_active: int

    def eligible(self, now: float, max_fix_age: float) -> bool:
        return (self.online and self.fix_tst is not None and now - self.fix_tst <= max_fix_age
                and self.active < self.max_active)

    def distance_m(self, lat: float, lon: float) -> float:
        assert self.fix_lat is not None and self.fix_lon is not None
        return haversine_m(self.fix_lat, self.fix_lon, lat, lon)


def choose(candidates: Iterable[Candidate], *, lat: float, lon: float, now: float, max_fix_age: float,
           exclude: Iterable[str] = (), nearest_first: bool = False) -> Candidate | None:
    """The courier to give an order to, or None if nobody is eligible.

    Ranked by (active orders, distance to lat/lon, courier id); with `nearest_first`, by
    (distance, active orders, courier id)."""
    banned = set(exclude)
    eligible = [c for c in candidates if c.courier_id not in banned and c.eligible(now, max_fix_age)]
    if not eligible:
        return None

    def rank(c: Candidate) -> tuple[float, float, str]:
        distance = c.distance_m(lat, lon)
        return (distance, c.active, c.courier_id) if nearest_first else (c.active, distance, c.courier_id)

    return min(eligible, key=rank)
