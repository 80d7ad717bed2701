"""When the courier will arrive: speed from its fixes, detour from its track, ETA. Pure functions.

**Speed.** Each newer fix gives one sample: OwnTracks' `vel` when the phone sends it, else the
great-circle distance from the courier's previous fix divided by the time between them (only when
that time is positive and at most `SAMPLE_MAX_GAP_SECONDS`). Samples above `MAX_PLAUSIBLE_KMH` (a
GPS jump) are ignored. Samples are smoothed by an exponentially weighted moving average (weight
`SPEED_ALPHA` for the newest). Until `MIN_SAMPLES` samples are known the speed is
`eta.default_speed_kmh` (an e-bike's); it is never taken below `eta.min_speed_kmh`, so a courier
waiting at a red light does not make the ETA explode.

**Detour.** Couriers ride roads, not straight lines: the ETA multiplies the straight-line
distance by a detour factor. It starts at `eta.detour_factor` (1.3, typical of city streets) and
then learns, for each order, what the courier's own track shows: the length ridden between two
fixes divided by the distance gained toward the address, smoothed (weight `DETOUR_ALPHA`) and
kept between 1 and `MAX_DETOUR`. Fixes that gain less than `MIN_GAIN_M` (standing still, or
riding to another stop first) teach it nothing.

**ETA** = distance * detour / speed, once the order is picked up.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.geo import haversine_m

SPEED_ALPHA = 0.3
MIN_SAMPLES = 3
SAMPLE_MAX_GAP_SECONDS = 300
MAX_PLAUSIBLE_KMH = 120.0
DETOUR_ALPHA = 0.5
MAX_DETOUR = 3.0
MIN_GAIN_M = 10.0


@dataclass(frozen=True)
class Point:
    lat: float
    lon: float
    tst: int
    vel: float | None = None  # km/h, as OwnTracks reports it


@dataclass(frozen=True)
class Speed:
    """A courier's smoothed speed and how many samples it rests on."""

    kmh: float = 0.0
    samples: int = 0


def next_speed(previous: Speed, last: Point | None, fix: Point) -> Speed:
    """The courier's speed after one more fix (`last` is its newest fix before this one)."""
    sample: float | None = None
    if fix.vel is not None:
        sample = fix.vel
    elif last is not None and 0 < fix.tst - last.tst <= SAMPLE_MAX_GAP_SECONDS:
        sample = haversine_m(last.lat, last.lon, fix.lat, fix.lon) / (fix.tst - last.tst) * 3.6
    if sample is None or sample > MAX_PLAUSIBLE_KMH:
        return previous
    if previous.samples == 0:
        return Speed(sample, 1)
    return Speed(previous.kmh + SPEED_ALPHA * (sample - previous.kmh), previous.samples + 1)


def effective_kmh(speed: Speed, *, default_kmh: float, min_kmh: float) -> float:
    """The speed to plan with: the default until enough samples are known, never below the minimum."""
    return default_kmh if speed.samples < MIN_SAMPLES else max(min_kmh, speed.kmh)


def next_detour(current: float, path_m: float, gained_m: float) -> float:
    """The order's detour factor after the courier rode `path_m` metres and got `gained_m` metres closer."""
    if gained_m < MIN_GAIN_M or path_m <= 0:
        return current
    ratio = min(MAX_DETOUR, max(1.0, path_m / gained_m))
    return current + DETOUR_ALPHA * (ratio - current)


def eta_seconds(distance_m: float, detour: float, kmh: float) -> int:
    """Seconds to ride `distance_m` (straight line) at `kmh` with this detour."""
    return round(distance_m * detour / (kmh / 3.6))
