"""A simulated day of a shop street, played against a running gateway over MQTT (`fieldgate simulate`).

The day ends when every order is final, or `grace_seconds` after the last order arrived.

`make_plan` is deterministic for a seed: shops around a city centre, couriers riding for them, orders
arriving over the day, which courier refuses, whose vehicle breaks down, which customer changes the
address, which courier rides out of coverage. `Day.run` plays it in real time: couriers are MQTT
clients (persistent sessions) riding jittered routes at e-bike speed and publishing OwnTracks fixes
once a second; the order system publishes orders and changes and counts acks.

Real time, real speeds, smaller distances: a day of `minutes` real minutes, with distances divided by
`scale`, so that trips take tens of seconds while every speed the gateway measures is a real one
(its ETA, geofence and timers work unchanged; the shops' arrival radius is scaled too).

The figures (`Summary`): delivered, late (after the window's end), reassigned, refused, exceptions,
changes confirmed; ETA error (|predicted - actual arrival| / time remaining, for predictions made at
least 5 s after pickup); receipt latency (task made → courier's phone has it); and `lost`: messages
the broker acknowledged that never had their effect (an order without `accepted`, a status without
`status_changed`, an order not final at the end).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import queue
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.bridge.transport import BrokerUrl, MqttClient
from gateway.core.geo import haversine_m, offset
from gateway.core.lifecycle import FINAL
from gateway.core.models import Courier, Shop

log = logging.getLogger("fieldgate.simulate")

CENTRE = (31.2304, 121.4737)  # People's Square, Shanghai
STEP_SECONDS = 0.25
FIX_EVERY_SECONDS = 1.0
SHOP_NAMES = ["Rose & Lily", "Tackle Box", "Gift Corner", "Luggage Hall", "Peony House", "Blue Heron", "Lantern",
              "Silk Road Gifts", "Harbour Rods", "Plum Blossom"]
COURIER_NAMES = ["Zhang Wei", "Wang Fang", "Li Na", "Liu Yang", "Chen Jie", "Yang Min", "Zhao Lei", "Huang Li",
                 "Zhou Tao", "Wu Hua", "Xu Jing", "Sun Bo", "Ma Lin", "Hu Jun", "Guo Mei", "He Ping"]


@dataclass(frozen=True)
class PlanShop:
    shop_id: str
    name: str
    lat: float
    lon: float


@dataclass(frozen=True)
class PlanCourier:
    courier_id: str
    name: str
    shop_id: str
    lat: float
    lon: float
    kmh: float
    offline_at: float | None  # seconds into the day it rides out of coverage
    offline_for: float


@dataclass(frozen=True)
class PlanOrder:
    order_id: str
    shop_id: str
    at: float  # seconds into the day
    lat: float
    lon: float
    window_seconds: float
    refused: bool  # the first courier offered it refuses
    breakdown: bool  # its courier's vehicle breaks down halfway to the door
    change_at: float | None  # the customer changes the address this long after ordering
    new_lat: float
    new_lon: float


@dataclass(frozen=True)
class Plan:
    seed: int
    scale: float
    seconds: float
    shops: tuple[PlanShop, ...]
    couriers: tuple[PlanCourier, ...]
    orders: tuple[PlanOrder, ...]


def make_plan(*, shops: int, couriers: int, orders: int, seed: int, scale: float, minutes: float) -> Plan:
    """The day, decided in advance: the same seed gives the same day."""
    rnd = random.Random(seed)
    seconds = minutes * 60
    placed = []
    for n in range(shops):
        lat, lon = offset(*CENTRE, rnd.uniform(-3000, 3000) / scale, rnd.uniform(-3000, 3000) / scale)
        placed.append(PlanShop(f"sim-shop-{n + 1}", SHOP_NAMES[n % len(SHOP_NAMES)], lat, lon))
    riders = []
    for n in range(couriers):
        shop = placed[n % shops]
        lat, lon = offset(shop.lat, shop.lon, rnd.uniform(-800, 800) / scale, rnd.uniform(-800, 800) / scale)
        away = rnd.random() < 0.2
        riders.append(PlanCourier(f"sim-c{n + 1:02d}", COURIER_NAMES[n % len(COURIER_NAMES)], shop.shop_id, lat, lon,
                                  rnd.uniform(15, 20), rnd.uniform(0.2, 0.6) * seconds if away else None,
                                  rnd.uniform(8, 20)))
    planned = []
    for n in range(orders):
        shop = placed[rnd.randrange(shops)]

        (lat, lon), (new_lat, new_lon) = _door(rnd, shop, scale), _door(rnd, shop, scale)
        ride = haversine_m(shop.lat, shop.lon, lat, lon) * 1.3 / (17 / 3.6)
        changed = rnd.random() < 0.06
        planned.append(PlanOrder(f"sim-{seed}-{n + 1:04d}", shop.shop_id, rnd.uniform(0, 0.8 * seconds), lat, lon,
                                 30 + ride * rnd.uniform(1.2, 3.5), rnd.random() < 0.06, rnd.random() < 0.03,
                                 rnd.uniform(2, 10) if changed else None, new_lat, new_lon))
    planned.sort(key=lambda o: o.at)
    return Plan(seed, scale, seconds, tuple(placed), tuple(riders), tuple(planned))


def _door(rnd: random.Random, shop: PlanShop, scale: float) -> tuple[float, float]:
    """A customer's door, 1.5 to 4.5 km (scaled) from the shop."""
    angle, distance = rnd.uniform(0, 2 * math.pi), rnd.uniform(1500, 4500) / scale
    return offset(shop.lat, shop.lon, distance * math.cos(angle), distance * math.sin(angle))


def registry(plan: Plan) -> tuple[list[Shop], list[Courier]]:
    """The plan's shops (nearest-idle, arrival radius scaled) and couriers, to register before the day starts."""
    shops = [Shop(shop_id=s.shop_id, name=s.name, lat=s.lat, lon=s.lon, assignment="nearest_idle",
                  arrival_radius_m=max(10.0, 500 / plan.scale), locale="en") for s in plan.shops]
    couriers = [Courier(courier_id=c.courier_id, name=c.name, shops=[c.shop_id], max_active=3) for c in plan.couriers]
    return shops, couriers


# ---------------------------------------------------------------- playing it


@dataclass
class Job:
    order_id: str
    legs: list[tuple[float, float]]  # where to ride, in order; the first leg ends at the goods
    picked_up: bool = False
    broken_down: bool = False  # planned: breaks down halfway to the door
    total: float = 0.0  # length of the ride to the door, to know when halfway is


@dataclass
class Rider:
    plan: PlanCourier
    lat: float
    lon: float
    client: MqttClient | None = None
    jobs: list[Job] = field(default_factory=list)
    broken: bool = False
    went_offline: bool = False
    offline_until: float | None = None
    last_fix: float = 0.0
    last_tst: int = 0
    unsent: list[tuple[str, bytes]] = field(default_factory=list)  # kept while out of coverage, as the app does


@dataclass
class Summary:
    orders: int = 0
    delivered: int = 0
    late: int = 0
    reassigned: int = 0
    refused: int = 0
    exceptions: int = 0
    changes_confirmed: int = 0
    eta_errors: list[float] = field(default_factory=list)
    receipt_ms: list[float] = field(default_factory=list)
    lost: int = 0
    lost_what: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def figures(self) -> dict[str, Any]:
        def pct(values: list[float], q: float) -> float | None:
            if not values:
                return None
            return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1], 3) \
                if len(values) > 1 else round(values[0], 3)
        return {
            "orders": self.orders, "delivered": self.delivered, "late": self.late, "reassigned": self.reassigned,
            "refused": self.refused, "exceptions": self.exceptions, "changes_confirmed": self.changes_confirmed,
            "eta_error_p50": pct(self.eta_errors, 50), "eta_error_p90": pct(self.eta_errors, 90),
            "receipt_latency_ms_p50": pct(self.receipt_ms, 50), "receipt_latency_ms_p99": pct(self.receipt_ms, 99),
            "lost": self.lost, "seconds": round(self.seconds, 1),
        }


class Day:
    """Plays a plan against the gateway at `url`. Single-threaded: MQTT callbacks only queue messages."""

    def __init__(self, plan: Plan, url: BrokerUrl, *, progress: Callable[[int, int], None] = lambda done, n: None,
                 grace_seconds: float = 600.0) -> None:
        self.plan = plan
        self.url = url
        self.progress = progress
        self.grace = grace_seconds
        self.inbox: queue.Queue[tuple[str, str, bytes, datetime]] = queue.Queue()
        self.rnd = random.Random(plan.seed + 1)
        self.riders = {c.courier_id: Rider(c, c.lat, c.lon) for c in plan.couriers}
        self.orders = {o.order_id: o for o in plan.orders}
        self.shops = {s.shop_id: s for s in plan.shops}
        self.where: dict[str, tuple[float, float]] = {}  # order -> where its goods are (a broken-down courier)
        self.refused_once: set[str] = set()
        self.published: dict[str, bool] = {}  # order -> PUBACKed
        self.placed: dict[str, datetime] = {}  # order -> when the order system placed it
        self.accepted: set[str] = set()
        self.final: dict[str, tuple[float, str]] = {}  # order -> (when, delivered|failed|cancelled)
        self.seen_tasks: set[str] = set()
        self.assigned: dict[str, int] = {}
        self.statuses_sent: dict[tuple[str, str], bool] = {}  # (order, status) -> PUBACKed
        self.statuses_acked: set[tuple[str, str]] = set()
        self.picked_at: dict[str, float] = {}
        self.predictions: dict[str, list[tuple[float, float]]] = {}  # order -> [(when, eta)]
        self.summary = Summary(orders=len(plan.orders))

    # ---------------------------------------------------------------- MQTT

    def _client(self, name: str, client_id: str, *, clean: bool, will: tuple[str, bytes, bool] | None = None,
                subscribe: tuple[str, ...] = ()) -> MqttClient:
        client = MqttClient(self.url, client_id, clean_session=clean, will=will,
                            on_message=lambda topic, payload: self.inbox.put((name, topic, payload,
                                                                              datetime.now(UTC))))
        client.connect()
        if subscribe:
            client.subscribe(*subscribe)
        return client

    def _connect_rider(self, rider: Rider) -> None:
        cid = rider.plan.courier_id
        will = (f"couriers/{cid}/presence", b'{"online": false}', True)
        rider.client = self._client(cid, f"sim-phone-{cid}", clean=False, will=will,
                                    subscribe=(f"couriers/{cid}/tasks",))
        rider.client.publish(f"couriers/{cid}/presence", b'{"online": true}', retain=True)
        unsent, rider.unsent = rider.unsent, []
        for topic, payload in unsent:
            self._send(rider, topic, payload)
        self._fix(rider, time.monotonic(), force=True)

    # ---------------------------------------------------------------- the day

    def run(self) -> Summary:
        start = time.monotonic()
        office = self._client("ordersys", f"sim-ordersys-{self.plan.seed}", clean=True,
                              subscribe=("ordersys/acks", "orders/+/state"))
        for rider in self.riders.values():
            self._connect_rider(rider)
        pending = list(self.plan.orders)
        changes = sorted((o.at + o.change_at, o.order_id) for o in self.plan.orders if o.change_at is not None)
        deadline = start + self.plan.seconds + self.grace
        try:
            while time.monotonic() < deadline:
                now = time.monotonic()
                day = now - start
                while pending and pending[0].at <= day:
                    self._place(office, pending.pop(0))
                while changes and changes[0][0] <= day:
                    self._change(office, changes.pop(0)[1])
                self._handle_inbox()
                for rider in self.riders.values():
                    self._ride(rider, day, now)
                self.progress(len(self.final), len(self.plan.orders))
                if not pending and len(self.final) == len(self.plan.orders):
                    break
                time.sleep(STEP_SECONDS)
            self._settle(office)
        finally:
            for rider in self.riders.values():
                if rider.client is not None:
                    rider.client.close()
            office.close()
        self.summary.seconds = time.monotonic() - start
        return self._count()

    def _place(self, office: MqttClient, o: PlanOrder) -> None:
        self.placed[o.order_id] = datetime.now(UTC)
        payload = self._order_payload(o, o.lat, o.lon, self.placed[o.order_id])
        self.published[o.order_id] = office.publish("orders/in", payload, timeout=10)

    def _order_payload(self, o: PlanOrder, lat: float, lon: float, placed: datetime) -> bytes:
        window = {"start": placed.isoformat(), "end": (placed + timedelta(seconds=o.window_seconds)).isoformat()}
        return json.dumps({
            "order_id": o.order_id, "shop_id": o.shop_id,
            "recipient": {"name": "Customer " + o.order_id[-4:], "phone": "+86139" + o.order_id[-4:].zfill(8)},
            "address": {"text": f"{o.order_id} door", "lat": lat, "lon": lon},
            "items": [{"name": "bouquet", "qty": 1}], "window": window,
        }).encode()

    def _change(self, office: MqttClient, order_id: str) -> None:
        if order_id in self.final:
            return
        o = self.orders[order_id]
        office.publish("orders/in", self._order_payload(o, o.new_lat, o.new_lon, self.placed[order_id]), timeout=10)

    def _settle(self, office: MqttClient) -> None:
        """Wait (bounded) for the acks of what was sent last."""
        until = time.monotonic() + 5
        while time.monotonic() < until and not self._all_acked():
            self._handle_inbox()
            time.sleep(0.05)

    def _all_acked(self) -> bool:
        return all(o in self.accepted for o, ok in self.published.items() if ok) and all(
            key in self.statuses_acked for key, ok in self.statuses_sent.items() if ok)

    # ---------------------------------------------------------------- what arrives

    def _handle_inbox(self) -> None:
        while True:
            try:
                who, topic, payload, received = self.inbox.get_nowait()
            except queue.Empty:
                return
            if not payload:
                continue
            data = json.loads(payload)
            if who == "ordersys":
                self._office_hears(topic, data)
            else:
                self._rider_hears(self.riders[who], data, received)

    def _office_hears(self, topic: str, data: dict[str, Any]) -> None:
        now = time.monotonic()
        order_id = data.get("order_id")
        if topic.endswith("/state"):
            if order_id in self.picked_at and data.get("eta_at") and now - self.picked_at[order_id] >= 5:
                eta = now + (datetime.fromisoformat(data["eta_at"]) - datetime.now(UTC)).total_seconds()
                self.predictions.setdefault(order_id, []).append((now, eta))
            return
        kind = data["kind"]
        if kind == "accepted":
            self.accepted.add(order_id)
        elif kind == "assigned":
            self.assigned[order_id] = self.assigned.get(order_id, 0) + 1
        elif kind == "change_confirmed":
            self.summary.changes_confirmed += 1
        elif kind == "status_changed":
            self.statuses_acked.add((order_id, data["status"]))
            if data["status"] in FINAL and order_id not in self.final:
                self.final[order_id] = (now, data["status"])
                o, placed = self.orders.get(order_id), self.placed.get(order_id)
                if o is not None and placed is not None and data["status"] == "delivered":
                    self.summary.delivered += 1
                    self.summary.late += datetime.fromisoformat(data["at"]) > placed + timedelta(
                        seconds=o.window_seconds)

    def _rider_hears(self, rider: Rider, task: dict[str, Any], received: datetime) -> None:
        cid = rider.plan.courier_id
        if rider.client is None:
            return  # it arrived just before the phone dropped out; the broker sends it again later
        order_id, kind = task["order_id"], task["kind"]
        receipt: dict[str, Any] = {"msg_ids": [task["msg_id"]], "read": True}
        if kind == "update" and task.get("confirm_required"):
            receipt["confirm"] = True
        rider.client.publish(f"couriers/{cid}/receipts", json.dumps(receipt).encode())
        o = self.orders.get(order_id)
        if task["msg_id"] in self.seen_tasks or o is None:
            return  # a re-sent task: the phone de-duplicates on msg_id
        self.seen_tasks.add(task["msg_id"])
        made = datetime.fromisoformat(task["at"])
        self.summary.receipt_ms.append(max(0.0, (received - made).total_seconds() * 1000))
        if kind == "assign":
            if o.refused and order_id not in self.refused_once:
                self.refused_once.add(order_id)
                self.summary.refused += 1
                self._status(rider, order_id, "rejected", reason="too far for me")
                return
            goods = self.where.get(order_id, (self.shops[o.shop_id].lat, self.shops[o.shop_id].lon))
            door = (task["order"]["address"]["lat"], task["order"]["address"]["lon"])
            job = Job(order_id, [goods, *self._route(goods, door)], broken_down=o.breakdown and not rider.broken
                      and order_id not in self.where)
            rider.jobs.append(job)
        elif kind == "cancel":
            rider.jobs = [j for j in rider.jobs if j.order_id != order_id]
        elif kind == "update":
            door = (task["order"]["address"]["lat"], task["order"]["address"]["lon"])
            for job in rider.jobs:
                if job.order_id == order_id:
                    start = job.legs[0] if not job.picked_up else (rider.lat, rider.lon)
                    job.legs = ([job.legs[0]] if not job.picked_up else []) + self._route(start, door)

    def _route(self, a: tuple[float, float], b: tuple[float, float]) -> list[tuple[float, float]]:
        """A jittered way from a to b: three bends off the straight line, then the door."""
        legs = []
        length = haversine_m(*a, *b)
        for f in (0.25, 0.5, 0.75):
            lat = a[0] + (b[0] - a[0]) * f
            lon = a[1] + (b[1] - a[1]) * f
            legs.append(offset(lat, lon, self.rnd.uniform(-0.12, 0.12) * length,
                               self.rnd.uniform(-0.12, 0.12) * length))
        return [*legs, b]

    # ---------------------------------------------------------------- riding

    def _ride(self, rider: Rider, day: float, now: float) -> None:
        p = rider.plan
        if rider.broken:
            return
        if rider.client is None and rider.offline_until is not None and now >= rider.offline_until:
            rider.offline_until = None
            self._connect_rider(rider)  # back in coverage: the tasks its session kept arrive now
        elif rider.client is not None and p.offline_at is not None and day >= p.offline_at and not rider.went_offline:
            rider.client.drop()  # out of coverage: its will says offline; its session keeps its tasks
            rider.client, rider.went_offline, rider.offline_until = None, True, now + p.offline_for
        if not rider.jobs:
            self._fix(rider, now)
            return
        job = rider.jobs[0]
        step = p.kmh / 3.6 * STEP_SECONDS
        while step > 0 and job.legs:
            target = job.legs[0]
            left = haversine_m(rider.lat, rider.lon, *target)
            if left <= step:
                rider.lat, rider.lon = target
                step -= left
                job.legs.pop(0)
                if not job.picked_up:
                    job.picked_up = True
                    job.total = self._remaining(rider, job)
                    self.picked_at[job.order_id] = now
                    self._status(rider, job.order_id, "picked_up")
                    self._status(rider, job.order_id, "en_route")
            else:
                f = step / left
                rider.lat += (target[0] - rider.lat) * f
                rider.lon += (target[1] - rider.lon) * f
                step = 0
        self._fix(rider, now)
        if job.picked_up and job.broken_down and self._remaining(rider, job) <= job.total / 2:
            self._break_down(rider, job)
            return
        if not job.legs:
            rider.jobs.pop(0)
            self._status(rider, job.order_id, "delivered")

    def _break_down(self, rider: Rider, job: Job) -> None:
        """Halfway to the door the vehicle breaks: the goods wait where it stands for whoever takes over; the orders
        not picked up yet go back; the courier goes home."""
        assert rider.client is not None
        self.summary.exceptions += 1
        self.where[job.order_id] = (rider.lat, rider.lon)
        self._status(rider, job.order_id, "exception", reason_code="vehicle_breakdown", reason="chain broke")
        for other in rider.jobs[1:]:
            self._status(rider, other.order_id, "rejected", reason="my vehicle broke down")
        rider.client.publish(f"couriers/{rider.plan.courier_id}/presence", b'{"online": false}', retain=True,
                             timeout=10)
        rider.client.close()
        rider.client, rider.broken, rider.jobs = None, True, []

    def _remaining(self, rider: Rider, job: Job) -> float:
        points = [(rider.lat, rider.lon), *job.legs]
        return sum(haversine_m(*a, *b) for a, b in itertools.pairwise(points))

    def _fix(self, rider: Rider, now: float, *, force: bool = False) -> None:
        tst = int(time.time())
        if rider.client is None or (not force and now - rider.last_fix < FIX_EVERY_SECONDS) or tst == rider.last_tst:
            return
        rider.last_fix, rider.last_tst = now, tst
        fix = {"_type": "location", "lat": round(rider.lat, 7), "lon": round(rider.lon, 7), "tst": tst,
               "acc": 8, "batt": 80, "tid": rider.plan.courier_id[-2:]}
        rider.client.publish(f"owntracks/{rider.plan.courier_id}/phone", json.dumps(fix).encode())

    def _status(self, rider: Rider, order_id: str, status: str, **extra: str) -> None:
        payload = json.dumps({"order_id": order_id, "status": status, **extra}).encode()
        self._send(rider, f"couriers/{rider.plan.courier_id}/status", payload)

    def _send(self, rider: Rider, topic: str, payload: bytes) -> None:
        """Publish now, or keep it until the phone is back in coverage."""
        if rider.client is None:
            rider.unsent.append((topic, payload))
            return
        ok = rider.client.publish(topic, payload, timeout=10)
        if topic.endswith("/status"):
            status = json.loads(payload)
            if status["status"] != "rejected":  # a refusal is answered `unassigned`, not `status_changed`
                self.statuses_sent[(status["order_id"], status["status"])] = ok

    # ---------------------------------------------------------------- the figures

    def _count(self) -> Summary:
        s = self.summary
        s.reassigned = sum(1 for n in self.assigned.values() if n > 1)
        for order_id, (done, _) in self.final.items():
            for when, eta in self.predictions.get(order_id, []):
                remaining = done - when
                if remaining > 1:
                    s.eta_errors.append(abs(eta - done) / remaining)
        lost = [f"order {o} not accepted" for o, ok in self.published.items() if ok and o not in self.accepted]
        lost += [f"{o} {st} not acknowledged" for (o, st), ok in self.statuses_sent.items()
                 if ok and (o, st) not in self.statuses_acked]
        lost += [f"order {o} not final" for o in self.accepted if o not in self.final]
        s.lost, s.lost_what = len(lost), lost
        return s
