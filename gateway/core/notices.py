"""Customer notices: which events make one, its text from templates, and the shop's quiet hours. Pure functions.

A notice is made for these moments of an order (the happening that causes it in brackets):
`confirmed` (created), `picked_up` (status picked_up), `arriving` (status arriving, the courier's or the
geofence's), `delayed` (late_risk), `changed` (change_confirmed), `exception` (exception), `delivered`
(status delivered, with an invitation to rate) and `failed` (status failed).

Texts come from templates per locale (zh-CN and en built in), each overridable in broker.yaml
(`notices.templates.<locale>.<kind>`); `check_templates` refuses a placeholder that does not exist, so a
typo is a configuration error at start, never a broken message at 2 a.m. Placeholders: {order_id},
{shop_name}, {courier_name}, {eta_minutes}, {eta_time}, {window_start}, {window_end}, {reason},
{tracking_url} (the customer's tracking page; not in the built-in texts: add it to a shop's own).

Urgent notices (orders of priority `urgent`, and the kinds arriving, exception, failed) go out at once.
Others falling in the shop's quiet hours (`22:00-08:00`, in the shop's time zone) wait for their end;
a newer notice of the same order makes the waiting ones obsolete (the customer wakes up to the latest
news only), and so does the order ending before they are sent (nothing but `delivered` or `failed`
is sent about a finished order).
"""

from __future__ import annotations

import string
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from gateway.core.models import Locale, NoticeKind, ReasonCode, Status

#: Which timeline entry makes which notice: (happening kind, status or None for any) → notice kind.
MADE_BY: dict[tuple[str, Status | None], NoticeKind] = {
    ("created", None): "confirmed",
    ("status", Status.picked_up): "picked_up",
    ("status", Status.arriving): "arriving",
    ("late_risk", None): "delayed",
    ("change_confirmed", None): "changed",
    ("exception", None): "exception",
    ("status", Status.delivered): "delivered",
    ("status", Status.failed): "failed",
}
URGENT_KINDS: frozenset[str] = frozenset({"arriving", "exception", "failed"})
PLACEHOLDERS = frozenset({"order_id", "shop_name", "courier_name", "eta_minutes", "eta_time", "window_start",
                          "window_end", "reason", "tracking_url"})

TEMPLATES: dict[str, dict[str, str]] = {
    "en": {
        "confirmed": "{shop_name} has confirmed your order {order_id}; delivery by {window_end}.",
        "picked_up": "{courier_name} has picked up your order {order_id} from {shop_name}: about {eta_minutes} "
                     "minutes.",
        "arriving": "{courier_name} is almost at your door with order {order_id}.",
        "delayed": "Sorry, order {order_id} is running late: now expected at {eta_time}.",
        "changed": "{courier_name} has your changes to order {order_id}.",
        "exception": "Order {order_id}: {reason}. We are on it; new estimated arrival {eta_time}.",
        "delivered": "Order {order_id} has been delivered. How did we do? Rate it from 1 to 5 stars.",
        "failed": "We could not deliver order {order_id} ({reason}). {shop_name} will contact you.",
    },
    "zh-CN": {
        "confirmed": "{shop_name}已确认您的订单{order_id}，预计{window_end}前送达。",
        "picked_up": "{courier_name}已从{shop_name}取走您的订单{order_id}，约{eta_minutes}分钟送达。",
        "arriving": "{courier_name}即将到达，请准备签收订单{order_id}。",
        "delayed": "抱歉，订单{order_id}将延迟送达，预计{eta_time}到达。",
        "changed": "{courier_name}已确认订单{order_id}的修改。",
        "exception": "订单{order_id}：{reason}。我们正在处理，预计送达时间{eta_time}。",
        "delivered": "订单{order_id}已送达。请为本次配送打分（1至5星）。",
        "failed": "订单{order_id}未能送达（{reason}），{shop_name}会尽快联系您。",
    },
}
#: What a placeholder says when its value is not known (yet).
UNKNOWN: dict[str, dict[str, str]] = {
    "en": {"courier_name": "Your courier", "eta_minutes": "30", "eta_time": "to follow", "window_start": "today",
           "window_end": "the end of the day", "reason": "a problem on the way"},
    "zh-CN": {"courier_name": "配送员", "eta_minutes": "30", "eta_time": "稍后通知", "window_start": "今天",
              "window_end": "今天", "reason": "配送途中出现问题"},
}
REASONS: dict[str, dict[ReasonCode, str]] = {
    "en": {"vehicle_breakdown": "the courier's vehicle broke down", "recipient_absent": "nobody was at home",
           "stock_out": "an item is out of stock", "address_wrong": "the address could not be found",
           "damaged": "the goods were damaged", "other": "a problem on the way"},
    "zh-CN": {"vehicle_breakdown": "配送车辆故障", "recipient_absent": "收件人不在", "stock_out": "商品缺货",
              "address_wrong": "地址有误", "damaged": "商品损坏", "other": "配送途中出现问题"},
}


def check_templates(overrides: dict[str, dict[str, str]]) -> list[str]:
    """What is wrong with templates from broker.yaml (empty: nothing)."""
    problems = []
    for locale, kinds in overrides.items():
        if locale not in TEMPLATES:
            problems.append(f"notices.templates.{locale}: unknown locale (use {' or '.join(TEMPLATES)})")
            continue
        for kind, text in kinds.items():
            where = f"notices.templates.{locale}.{kind}"
            if kind not in TEMPLATES["en"]:
                problems.append(f"{where}: unknown notice kind (use {', '.join(TEMPLATES['en'])})")
                continue
            try:
                names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if unknown := sorted(names - PLACEHOLDERS):
                problems.append(f"{where}: unknown placeholder {', '.join('{' + n + '}' for n in unknown)} "
                                f"(use {', '.join('{' + p + '}' for p in sorted(PLACEHOLDERS))})")
    return problems


def kind_of(happening_kind: str, status: Status) -> NoticeKind | None:
    """The notice a timeline entry makes, if any."""
    return MADE_BY.get((happening_kind, status)) or MADE_BY.get((happening_kind, None))


def urgent(kind: str, priority: str) -> bool:
    return priority == "urgent" or kind in URGENT_KINDS


def compose(kind: NoticeKind, locale: Locale, values: dict[str, str | None],
            overrides: dict[str, dict[str, str]]) -> str:
    """The notice's text: the shop's locale's template (broker.yaml's, else the built-in one), values filled in,
    unknown ones said gracefully."""
    template = overrides.get(locale, {}).get(kind) or TEMPLATES[locale][kind]
    filled = {name: values.get(name) or UNKNOWN[locale].get(name, "") for name in PLACEHOLDERS}
    return template.format(**filled)


def reason_text(locale: Locale, code: ReasonCode | None, text: str | None) -> str | None:
    return text or (REASONS[locale][code] if code else None)


def local(at: datetime, timezone: str) -> datetime:
    return at.astimezone(ZoneInfo(timezone))


def quiet_until(quiet_hours: str | None, timezone: str, now: datetime) -> datetime | None:
    """If `now` falls in the quiet hours ("HH:MM-HH:MM", local to `timezone`; may span midnight), when they end."""
    if not quiet_hours:
        return None
    start_text, end_text = quiet_hours.split("-")
    start, end = time.fromisoformat(start_text), time.fromisoformat(end_text)
    if start == end:
        return None
    here = local(now, timezone)
    t = here.time()
    inside = (start <= t < end) if start < end else (t >= start or t < end)
    if not inside:
        return None
    ends = here.replace(hour=end.hour, minute=end.minute, second=0, microsecond=0)
    if ends <= here:
        ends += timedelta(days=1)
    return ends


def obsolete(kind: str, status: Status) -> bool:
    """Would sending this (waiting) notice now be news the customer no longer needs?"""
    finished = status in (Status.delivered, Status.failed, Status.cancelled)
    return finished and kind not in ("delivered", "failed")
