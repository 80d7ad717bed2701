"""Webhooks: which outbound messages become webhook events, and what to do after each delivery attempt. Pure.

An order system that does not speak MQTT subscribes an endpoint to events (`fieldgate webhooks
add URL --events ack,order_event,notice`); each message the gateway publishes that is such an event
becomes one delivery row per subscribed endpoint, in the transaction that made it.

After an attempt (`judge`): a 2xx is done; no answer (timeout, refused connection), 408, 429 and
5xx are tried again after a backoff that starts at `first_retry_seconds`, doubles each time, is
capped at `max_retry_seconds`, has ±25 % jitter and is never shorter than the receiver's
Retry-After; a delivery whose next try would fall after `give_up_hours` since it was made is given
up. 410 Gone disables the endpoint (its deliveries wait, unsent, until it is enabled again); any
other answer is a failure, kept for `fieldgate webhooks retry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from gateway.core import contract


class Event(StrEnum):
    """What an endpoint can subscribe to."""

    ack = "ack"  # every Ack the order system would get on ordersys/acks
    order_event = "order_event"  # every OrderEvent of every shop (shops/{shop_id}/orders)
    notice = "notice"  # every customer notice (ordersys/notices)


def event_of(topic: str) -> Event | None:
    """The webhook event an outbound message is, if any."""
    if topic == contract.ORDERSYS_ACKS:
        return Event.ack
    if topic == contract.ORDERSYS_NOTICES:
        return Event.notice
    if topic.startswith("shops/") and topic.endswith("/orders"):
        return Event.order_event
    return None


class State(StrEnum):
    pending = "pending"  # to be sent at next_attempt_at
    delivered = "delivered"
    failed = "failed"  # refused by the receiver; kept for `fieldgate webhooks retry`
    gave_up = "gave_up"  # not delivered within give_up_hours


@dataclass(frozen=True)
class Attempt:
    """What one POST got: an HTTP status, or no answer at all (status None: timeout, connection error)."""

    status: int | None
    error: str | None = None
    retry_after: float | None = None  # seconds, from the receiver's Retry-After


@dataclass(frozen=True)
class Policy:
    first_retry_seconds: float
    max_retry_seconds: float
    give_up: timedelta


@dataclass(frozen=True)
class Verdict:
    state: State
    next_attempt_at: datetime | None  # when pending
    disable_endpoint: bool
    result: str  # for the metrics: delivered, retry, failed, gave_up, disabled


def _retryable(attempt: Attempt) -> bool:
    return attempt.status is None or attempt.status in (408, 429) or attempt.status >= 500


def judge(attempt: Attempt, attempts_before: int, created_at: datetime, now: datetime, policy: Policy,
          jitter: float) -> Verdict:
    """What becomes of a delivery after an attempt; `jitter` is a random number in [0, 1)."""
    if attempt.status is not None and 200 <= attempt.status < 300:
        return Verdict(State.delivered, None, False, "delivered")
    if attempt.status == 410:
        return Verdict(State.pending, now, True, "disabled")
    if not _retryable(attempt):
        return Verdict(State.failed, None, False, "failed")
    backoff = min(policy.max_retry_seconds, policy.first_retry_seconds * 2 ** min(attempts_before, 30))
    delay = max(backoff * (0.75 + 0.5 * jitter), attempt.retry_after or 0.0)
    next_at = now + timedelta(seconds=delay)
    if next_at > created_at + policy.give_up:
        return Verdict(State.gave_up, None, False, "gave_up")
    return Verdict(State.pending, next_at, False, "retry")
