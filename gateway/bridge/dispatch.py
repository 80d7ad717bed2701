"""Dispatch: who delivers each order, where its courier is, what waits too long.

The decisions are pure (`gateway.core.assignment.choose`, `gateway.core.lifecycle`, `gateway.core.eta`);
this module feeds them what the store knows and hands their outcomes to the gateway's `apply`
(one transaction, the outbox). It is driven by the gateway:

- an order without a courier: its shop's rule (`place`) — fixed: the shop's default courier, else it
  waits for the shop; nearest_idle: `choose`, else `waiting_for_courier`;
- a refusal, a breakdown, a courier freed, back online or with a fresh fix: the same rule, again;
- every fix: the courier's speed, then each active order's distance, ETA, geofence and lateness;
- every second (`tick`): accept timeouts, waiting orders (retry, then one `alert`), unconfirmed changes.

A shop that is not registered behaves as before registration existed: fixed assignment only, no
alerts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from gateway.config import Settings
from gateway.core import assignment, eta, lifecycle
from gateway.core.contract import courier_topic
from gateway.core.lifecycle import CourierRef, EtaRules, NewId, OrderRecord, Outcome, Outgoing
from gateway.core.models import Fix, Shop
from gateway.store.tables import Store, json_time

log = logging.getLogger("fieldgate.dispatch")

Apply = Callable[[Outcome | None, datetime], list[Outgoing]]

#: The actor of what the gateway decides by itself.
GATEWAY = "gateway"


class Dispatcher:
    """Assignment, tracking and timers, over the gateway's store. Owned by the gateway's thread."""

    def __init__(self, store: Store, settings: Settings, new_id: NewId, apply: Apply) -> None:
        self.store = store
        self.settings = settings
        self.new_id = new_id
        self.apply = apply
        self._speed: dict[str, eta.Speed] = {}  # write-through cache of the couriers' speeds

    def forget(self) -> None:
        """A rollback may have undone what the cache remembers."""
        self._speed.clear()

    # ------------------------------------------------------------------ lookups

    def courier(self, courier_id: str | None) -> CourierRef | None:
        return None if courier_id is None else self.store.courier_ref(courier_id)

    def rules(self, shop: Shop | None) -> EtaRules:
        e = self.settings.eta
        radius = shop.arrival_radius_m if shop is not None and shop.arrival_radius_m else self.settings.arrival_radius_m
        return EtaRules(detour_factor=e.detour_factor, delay_step=timedelta(minutes=e.delay_step_minutes),
                        arrival_radius_m=radius)

    def speed(self, courier_id: str) -> eta.Speed:
        if courier_id not in self._speed:
            self._speed[courier_id] = self.store.speed(courier_id)
        return self._speed[courier_id]

    def speed_kmh(self, courier_id: str) -> float:
        e = self.settings.eta
        return eta.effective_kmh(self.speed(courier_id), default_kmh=e.default_speed_kmh, min_kmh=e.min_speed_kmh)

    # ------------------------------------------------------------------ who delivers

    def place(self, record: OrderRecord, now: datetime) -> list[Outgoing]:
        """An order without a courier (or a broken-down courier's): apply its shop's rule."""
        shop = self.store.get_shop(record.order.shop_id)
        if shop is None:  # not registered: the shop assigns; nothing to watch
            if record.dispatch.waiting_since is not None:
                return self.apply(Outcome(record=replace(record, dispatch=replace(
                    record.dispatch, waiting_since=None))), now)
            return []
        if shop.assignment == "fixed":
            if record.courier_id is None and shop.default_courier and shop.default_courier not in \
                    record.dispatch.refused_by:
                courier = self.store.courier_ref(shop.default_courier)
                return self.apply(lifecycle.assign(record, courier, GATEWAY, now, self.new_id), now)
            return []  # the shop decides; `tick` alerts it if nobody is assigned in time
        takeover = record.dispatch.takeover_from
        origin = (shop.lat, shop.lon)
        if takeover is not None and record.location is not None:
            origin = (record.location.lat, record.location.lon)
        rules = self.settings.assignment
        chosen = assignment.choose(
            self.store.candidates(shop.shop_id, rules.default_max_active), lat=origin[0], lon=origin[1],
            now=now.timestamp(), max_fix_age=rules.max_fix_age_seconds,
            exclude=(*record.dispatch.refused_by, *([takeover] if takeover else [])),
            nearest_first=takeover is not None)
        if chosen is not None:
            log.info("assigning automatically", extra={"ctx": {"order_id": record.order_id,
                                                               "courier_id": chosen.courier_id,
                                                               "active": chosen.active, "takeover_from": takeover}})
            courier = self.store.courier_ref(chosen.courier_id)
            return self.apply(lifecycle.assign(record, courier, GATEWAY, now, self.new_id, auto=True), now)
        if record.dispatch.waiting_announced:
            return []
        why = (f"no courier can take over from {takeover} yet" if takeover else
               f"none of shop {shop.shop_id}'s couriers is online, fresh and below its load limit")
        return self.apply(lifecycle.waiting(record, why, now), now)

    def after_status(self, outcome: Outcome, now: datetime) -> list[Outgoing]:
        """What follows a courier's status: the next courier after a refusal or a breakdown, the waiting orders a
        freed courier can take, and the ETA of an order just picked up."""
        record, out = outcome.record, []
        refused = any(h.kind == "rejected_by_courier" for h in outcome.happenings)
        broke = any(h.reason_code == "vehicle_breakdown" for h in outcome.happenings)
        if refused:
            out += self.place(record, now)
        elif broke:
            shop = self.store.get_shop(record.order.shop_id)
            if shop is not None and shop.assignment == "nearest_idle":
                out += self.place(lifecycle.hand_over(record, now), now)
        elif not record.active and record.courier_id is not None:
            out += self.offer_waiting(record.courier_id, now)
        elif record.location is not None and record.picked_up:
            shop = self.store.get_shop(record.order.shop_id)
            out += self.apply(lifecycle.track(record, record.location, self.speed_kmh(record.courier_id or ""),
                                              self.rules(shop), now), now)
        return out

    def offer_waiting(self, courier_id: str, now: datetime) -> list[Outgoing]:
        """A courier may have become eligible (online, freed, fresh fix): its shops' waiting orders try again."""
        shops = self.store.shops_of(courier_id)
        if not shops:
            return []
        out: list[Outgoing] = []
        for record in self.store.waiting_orders(shops):
            out += self.place(record, now)
        return out

    # ------------------------------------------------------------------ where the courier is

    def fix(self, courier_id: str, path: list[Fix], previous: Fix | None, now: datetime) -> list[Outgoing]:
        """The courier's new fixes (`path`, oldest first, each newer than `previous`): the newest stored with the
        speed learnt from every leg, then each active order's distance, ETA, geofence, lateness along the path;
        and, if its location was stale or missing until now, its shops' waiting orders."""
        speed, last = self.speed(courier_id), previous
        for step in path:
            speed, last = eta.next_speed(speed, _point(last), _point(step)), step
        fix = path[-1]
        self._speed[courier_id] = speed
        self.store.set_fix(courier_id, fix, speed)
        kmh = self.speed_kmh(courier_id)
        out: list[Outgoing] = []
        shops: dict[str, Shop | None] = {}
        for record in self.store.active_orders_of(courier_id):
            shop_id = record.order.shop_id
            if shop_id not in shops:
                shops[shop_id] = self.store.get_shop(shop_id)
            out += self.apply(lifecycle.track_path(record, path, kmh, self.rules(shops[shop_id]), now), now)
        max_age = self.settings.assignment.max_fix_age_seconds
        if previous is None or now.timestamp() - previous.tst > max_age:
            out += self.offer_waiting(courier_id, now)
        return out

    def courier_orders(self, courier_id: str, now: datetime) -> Outgoing:
        """The retained list of a courier's active orders (couriers/{courier_id}/orders): the JSON of `CourierOrders`,
        byte for byte, written without building the models (a busy courier's list is long, and rebuilt for every
        batch that touched the courier)."""
        body = {"courier_id": courier_id, "orders": self.store.courier_orders(courier_id),
                "at": json_time(now.isoformat())}
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        return Outgoing(courier_topic(courier_id, "orders"), payload, True)

    # ------------------------------------------------------------------ timers

    def tick(self, now: datetime) -> list[Outgoing]:
        """Once a second: assignments nobody accepted in time move on; waiting orders try again (and alert their
        shop once after assignment.alert_after_seconds); unconfirmed changes alert the shop once."""
        a = self.settings.assignment
        out: list[Outgoing] = []
        late = now - timedelta(seconds=a.accept_timeout_seconds)
        for order_id, courier_id in self.store.unaccepted_assignments(late):
            record = self.store.get_order(order_id)  # held now: another bridge's timer may have moved it on
            if record is None or record.picked_up or record.courier_id != courier_id:
                continue
            log.info("assignment not accepted in time", extra={"ctx": {"order_id": order_id, "courier_id": courier_id}})
            refused = lifecycle.refuse(record, courier_id, f"no receipt within {a.accept_timeout_seconds} s", now,
                                       self.new_id, actor=GATEWAY)
            out += self.apply(refused, now) + self.place(refused.record, now)
        shops: dict[str, Shop | None] = {}
        anyone: dict[str, bool] = {}  # shop -> is any of its couriers eligible now (else its orders need not try)
        for record in self.store.waiting_orders():
            shop_id = record.order.shop_id
            if shop_id not in shops:
                shops[shop_id] = self.store.get_shop(shop_id)
            shop = shops[shop_id]
            if shop is not None and shop.assignment == "nearest_idle":
                if shop_id not in anyone:
                    anyone[shop_id] = any(c.eligible(now.timestamp(), a.max_fix_age_seconds)
                                          for c in self.store.candidates(shop_id, a.default_max_active))
                if anyone[shop_id]:
                    out += self.place(record, now)
                    record = self.store.get_order(record.order_id) or record
                    if record.courier_id is not None:
                        del anyone[shop_id]  # that courier may be full now
            since = record.dispatch.waiting_since
            if (shop is not None and since is not None and not record.dispatch.alerted
                    and now - since >= timedelta(seconds=a.alert_after_seconds)):
                minutes = round((now - since).total_seconds() / 60)
                out += self.apply(lifecycle.alert(record, f"no courier for {minutes} min", now,
                                                  stop_waiting=shop.assignment == "fixed"), now)
        confirm = self.settings.changes.confirm_timeout_seconds
        for record in self.store.unconfirmed_changes(now - timedelta(seconds=confirm)):
            out += self.apply(lifecycle.alert(record, f"courier {record.courier_id} has not confirmed the change "
                                              f"for {confirm} s", now, about_change=True), now)
        return out


def _point(fix: Fix | None) -> eta.Point | None:
    return None if fix is None else eta.Point(fix.lat, fix.lon, fix.tst, fix.vel)

