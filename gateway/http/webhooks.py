"""The webhook sender: POSTs the deliveries the bridge committed, signed the Standard Webhooks way.

Runs on the HTTP side's event loop, so a slow or dead receiver holds up nothing but its own
deliveries: MQTT traffic never waits for it. Each delivery is a row of `webhook_deliveries`, made in
the transaction of the event it carries (the outbox), so nothing committed is lost to a crash: a
delivery in flight when the process dies is still pending and is sent again, with the same
`webhook-id`, at the next start (receivers drop ids they have seen).

    webhook-id          msg_<32 hex>, the same on every attempt of one delivery
    webhook-timestamp   the attempt's time, epoch seconds
    webhook-signature   v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>" keyed with the secret>

For each endpoint at most `webhooks.max_in_flight_per_endpoint` POSTs are under way, and an
order's deliveries go one at a time, oldest first (`Queries.due_deliveries`), so its events arrive in
the order they happened. What an answer means is `gateway.core.webhooks.judge`'s; the outcome is
committed by the bridge (`Gateway.record_webhook`).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
from collections import Counter
from datetime import UTC, datetime

import httpx
from standardwebhooks.webhooks import Webhook

from gateway import metrics
from gateway.bridge.worker import Bridge
from gateway.config import WebhookSettings
from gateway.core.webhooks import Attempt, Policy, judge
from gateway.http.reader import Reader
from gateway.store.tables import Delivery

log = logging.getLogger("fieldgate.webhooks")

#: How often the sender looks for deliveries whose retry time has come, when nothing wakes it sooner.
IDLE_SECONDS = 1.0
USER_AGENT = "fieldgate-webhooks/1"
#: The lease (`Tables.leads`) of sending webhooks, when several bridges share a store: one sends at a time.
WEBHOOKS = "webhooks"


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - now).total_seconds()) if when.tzinfo else None


def signed_headers(delivery: Delivery, at: datetime) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": delivery.webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(delivery.secret).sign(delivery.webhook_id, at, delivery.payload.decode()),
    }


class WebhookSender:
    def __init__(self, reader: Reader, bridge: Bridge, settings: WebhookSettings) -> None:
        self.reader = reader
        self.bridge = bridge
        self.settings = settings
        self.policy = Policy(settings.first_retry_seconds, settings.max_retry_seconds, settings.give_up)
        self._busy: set[int] = set()
        self._per_endpoint: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def wake(self) -> None:
        """New deliveries were committed (called from the bridge's thread)."""
        with contextlib.suppress(RuntimeError):  # the loop has just closed: the next start sends them
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        """Send until cancelled; cancelling abandons the POSTs under way (their rows stay pending)."""
        async with httpx.AsyncClient(timeout=self.settings.timeout_seconds, follow_redirects=False) as client:
            try:
                while True:
                    self._wake.clear()
                    await self._start_due(client)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), IDLE_SECONDS)
            finally:
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _start_due(self, client: httpx.AsyncClient) -> None:
        def due() -> list[Delivery]:
            with self.reader() as store:  # with several bridges on one store, the one holding the lease sends
                return store.due_deliveries(datetime.now(UTC), self._busy) if store.leads(WEBHOOKS) else []

        for delivery in await asyncio.to_thread(due):
            if self._per_endpoint[delivery.endpoint_id] >= self.settings.max_in_flight_per_endpoint:
                continue
            self._busy.add(delivery.id)
            self._per_endpoint[delivery.endpoint_id] += 1
            task = asyncio.create_task(self._send(client, delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, client: httpx.AsyncClient, delivery: Delivery) -> None:
        try:
            attempt = await self._post(client, delivery)
            verdict = judge(attempt, delivery.attempts, delivery.created_at, datetime.now(UTC), self.policy,
                            random.random())
            metrics.WEBHOOK_DELIVERIES.labels(verdict.result).inc()
            log.log(logging.INFO if verdict.result == "delivered" else logging.WARNING, "webhook %s", verdict.result,
                    extra={"ctx": {"endpoint": delivery.endpoint_id, "webhook_id": delivery.webhook_id,
                                   "status": attempt.status, "error": attempt.error,
                                   "attempt": delivery.attempts + 1, "next": verdict.next_attempt_at}})
            await asyncio.wrap_future(self.bridge.call(
                lambda: self.bridge.gateway.record_webhook(delivery, verdict, attempt.status, attempt.error)))
        except Exception:
            log.exception("webhook delivery could not be recorded; it stays pending",
                          extra={"ctx": {"webhook_id": delivery.webhook_id}})
        finally:
            self._busy.discard(delivery.id)
            self._per_endpoint[delivery.endpoint_id] -= 1
            self._wake.set()  # the order's next delivery, or the endpoint's room, may be due now

    async def _post(self, client: httpx.AsyncClient, delivery: Delivery) -> Attempt:
        now = datetime.now(UTC)
        try:
            async with client.stream("POST", delivery.url, content=delivery.payload,
                                     headers=signed_headers(delivery, now)) as response:
                code = response.status_code
                ok = 200 <= code < 300
                return Attempt(code, None if ok else f"HTTP {code} {response.reason_phrase}".strip(),
                               retry_after(response.headers.get("retry-after"), now))
        except httpx.TimeoutException:
            return Attempt(None, f"no answer within {self.settings.timeout_seconds:g} s")
        except httpx.HTTPError as exc:
            return Attempt(None, f"{type(exc).__name__}: {exc}"[:300])
