"""Webhooks out, with real receivers on 127.0.0.1: signed (verified with the standardwebhooks library), retried,
in order per order, never holding up MQTT, and never lost to a kill -9."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from conftest import DEADLINE, GatewayProcess, eventually, launch, order, store_config
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks.webhooks import Webhook

from gateway.core.webhooks import Attempt, Policy, State, event_of, judge

FAST_RETRIES = {"webhooks": {"first_retry_seconds": 0.2, "max_retry_seconds": 1.0, "timeout_seconds": 5}}


@dataclass
class Hit:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real webhook receiver: records each POST; `answer` decides the reply (status, headers) of each."""

    answer: Callable[[Hit], tuple[int, dict[str, str]]] = lambda hit: (204, {})
    hits: list[Hit] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                hit = Hit({k.lower(): v for k, v in self.headers.items()},
                          self.rfile.read(int(self.headers["content-length"])), time.monotonic())
                with receiver._cond:
                    receiver.hits.append(hit)
                    receiver._cond.notify_all()
                status, headers = receiver.answer(hit)
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                except OSError:
                    pass  # the gateway was killed while we held its request

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait(self, where: Callable[[Hit], bool], count: int = 1, timeout: float = DEADLINE) -> list[Hit]:
        with self._cond:
            if not self._cond.wait_for(lambda: len([h for h in self.hits if where(h)]) >= count, timeout):
                raise AssertionError(f"wanted {count} hits, got {[h.json for h in self.hits][-10:]}")
            return [h for h in self.hits if where(h)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def about(order_id: str, event: str | None = None) -> Callable[[Hit], bool]:
    return lambda hit: hit.json["data"].get("order_id") == order_id and (event is None or hit.json["type"] == event)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[GatewayProcess]:
    """A gateway for this module, on each store."""
    process = launch(tmp_path_factory.mktemp("webhooks"), config={**FAST_RETRIES, **store_config(request, "webhooks")})
    yield process
    process.kill()


@pytest.fixture
def hook() -> Iterator[Callable[..., tuple[Receiver, str, str]]]:
    """hook(gw, answer, events=...) → (receiver, endpoint id, secret): a receiver subscribed to `gw` through the CLI;
    removed (endpoint and receiver) at the end."""
    made: list[tuple[Receiver, GatewayProcess, str]] = []

    def make(gateway: GatewayProcess, answer: Callable[[Hit], tuple[int, dict[str, str]]] = lambda hit: (204, {}), *,
             events: str = "ack,order_event,notice") -> tuple[Receiver, str, str]:
        receiver = Receiver(answer)
        added = gateway.cli("webhooks", "add", receiver.url, "--events", events)
        assert added.returncode == 0, added.stderr
        endpoint = added.stdout.split()[1].rstrip(":")
        made.append((receiver, gateway, endpoint))
        return receiver, endpoint, added.stdout.strip().splitlines()[-1]

    yield make
    for receiver, gateway, endpoint in made:
        gateway.cli("webhooks", "remove", endpoint)
        receiver.close()


def deliveries(gw: GatewayProcess, *extra: str) -> list[dict[str, Any]]:
    out = gw.cli("webhooks", "deliveries", "--json", "--limit", "1000", *extra)
    return [json.loads(line) for line in out.stdout.splitlines()]


# ---------------------------------------------------------------- the policy, pure


POLICY = Policy(first_retry_seconds=5, max_retry_seconds=3600, give_up=timedelta(hours=24))
MADE = datetime(2026, 11, 22, 9, tzinfo=UTC)


def results(gw: GatewayProcess) -> dict[str, float]:
    """fieldgate_webhook_deliveries_total by result, and the queue age, as /metrics says (the local operator
    token the gateway leaves for the CLI)."""
    token = json.loads((gw.data_dir / "local-http.json").read_text())["token"]
    text = httpx.get(f"{gw.url}/metrics", headers={"Authorization": f"Bearer {token}"}).text
    samples = {(s.name, s.labels.get("result")): s.value for f in text_string_to_metric_families(text)
               for s in f.samples}
    return {"delivered": samples.get(("fieldgate_webhook_deliveries_total", "delivered"), 0),
            "retry": samples.get(("fieldgate_webhook_deliveries_total", "retry"), 0),
            "queue_age": samples[("fieldgate_webhook_queue_age_seconds", None)]}


@given(attempts=st.integers(0, 40), jitter=st.floats(0, 1, exclude_max=True),
       status=st.sampled_from([None, 408, 429, 500, 502, 503]))
def test_retries_back_off_exponentially_with_jitter_up_to_the_cap(attempts, jitter, status):
    now = MADE + timedelta(minutes=1)
    verdict = judge(Attempt(status), attempts, MADE, now, POLICY, jitter)
    assert verdict.state == State.pending and verdict.next_attempt_at is not None
    delay = (verdict.next_attempt_at - now).total_seconds()
    base = min(3600, 5 * 2 ** attempts)
    assert 0.75 * base <= delay <= 1.25 * base


def test_what_each_answer_means():
    now = MADE + timedelta(minutes=1)
    assert judge(Attempt(200), 0, MADE, now, POLICY, 0.5).state == State.delivered
    assert judge(Attempt(204), 3, MADE, now, POLICY, 0.5).result == "delivered"
    gone = judge(Attempt(410), 0, MADE, now, POLICY, 0.5)
    assert gone.disable_endpoint and gone.state == State.pending
    for status in (400, 401, 404, 422, 301):
        assert judge(Attempt(status), 0, MADE, now, POLICY, 0.5).state == State.failed
    waited = judge(Attempt(429, retry_after=600), 0, MADE, now, POLICY, 0.5)
    assert waited.next_attempt_at == now + timedelta(seconds=600)
    late = MADE + timedelta(hours=23, minutes=59)
    assert judge(Attempt(None, "timed out"), 10, MADE, late, POLICY, 0.5).state == State.gave_up
    assert judge(Attempt(503, retry_after=2 * 86400), 0, MADE, now, POLICY, 0.5).state == State.gave_up


def test_which_messages_are_webhook_events():
    assert [event_of(t) for t in ("ordersys/acks", "ordersys/notices", "shops/rose/orders", "shops/rose/open",
                                  "couriers/c7/tasks", "orders/A1/state")] == [
        "ack", "notice", "order_event", None, None, None]


# ---------------------------------------------------------------- real receivers


def test_events_arrive_signed_and_verify_with_standardwebhooks(gw, hook, peers, ids):
    oid, shop = ids("A"), ids("shop")
    receiver, _, secret = hook(gw)
    peers(gw.port).publish("orders/in", order(order_id=oid, shop_id=shop))
    for event in ("ack", "order_event", "notice"):
        receiver.wait(about(oid, event))
    hits = receiver.wait(about(oid))
    verifier = Webhook(secret)
    kinds = set()
    for hit in hits:
        assert hit.headers["webhook-id"].startswith("msg_") and hit.headers["content-type"] == "application/json"
        assert abs(int(hit.headers["webhook-timestamp"]) - time.time()) < 60
        data = verifier.verify(hit.body, hit.headers)  # raises unless the signature is right
        kinds.add((data["type"], data["data"].get("kind")))
        assert data["data"]["order_id"] == oid and data["timestamp"]
    assert {("ack", "accepted"), ("order_event", "created"), ("notice", "confirmed")} <= kinds
    tampered = {**hits[0].headers, "webhook-signature": "v1," + "A" * 44}
    with pytest.raises(Exception, match="signature"):
        verifier.verify(hits[0].body, tampered)


def test_only_the_subscribed_events_are_sent(gw, hook, peers, ids):
    oid = ids("A")
    receiver, _, _ = hook(gw, events="ack")
    peers(gw.port).publish("orders/in", order(order_id=oid, shop_id=ids("shop")))
    receiver.wait(about(oid, "ack"))
    assert all(hit.json["type"] == "ack" for hit in receiver.hits)
    bad = gw.cli("webhooks", "add", receiver.url, "--events", "ack,gossip")
    assert bad.returncode == 1 and "unknown event gossip" in bad.stderr


def test_failures_are_retried_with_the_same_webhook_id_honouring_retry_after(gw, hook, peers, ids):
    oid = ids("A")
    answers = iter([(503, {}), (429, {"Retry-After": "1"})])
    receiver, _, _ = hook(gw, lambda hit: next(answers, (200, {})) if about(oid)(hit) else (204, {}), events="ack")
    before = results(gw)
    peers(gw.port).publish("orders/in", order(order_id=oid, shop_id=ids("shop")))
    first, second, third = receiver.wait(about(oid), count=3)
    eventually(lambda: results(gw)["delivered"] > before["delivered"], "the metrics counted the delivery")
    after = results(gw)
    assert after["retry"] - before["retry"] >= 2 and after["queue_age"] >= 0  # the 503 and the 429
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == third.headers["webhook-id"]
    assert third.at - second.at >= 1.0  # Retry-After: 1 is honoured
    [row] = [d for d in deliveries(gw) if d["webhook_id"] == first.headers["webhook-id"]]
    assert row["state"] == "delivered" and row["attempts"] == 3 and row["last_status"] == 200


def test_a_slow_receiver_never_slows_mqtt(gw, hook, peers, ids):
    oid, second, courier = ids("A"), ids("B"), ids("c")
    release = threading.Event()

    def held(hit: Hit) -> tuple[int, dict[str, str]]:
        release.wait(DEADLINE)
        return 204, {}

    receiver, _, _ = hook(gw, held, events="ack")
    ordersys = peers(gw.port, subscribe=("ordersys/acks",))
    phone = peers(gw.port, subscribe=(f"couriers/{courier}/tasks",))
    ordersys.publish("orders/in", order(order_id=oid, shop_id=ids("shop")))
    receiver.wait(about(oid))  # the receiver now holds the request
    ordersys.publish("orders/in", order(order_id=second, shop_id=ids("shop"), courier_id=courier))
    phone.wait_for(f"couriers/{courier}/tasks", lambda t: t["order_id"] == second)
    ordersys.wait_for("ordersys/acks", lambda a: a["order_id"] == second and a["kind"] == "assigned")
    assert not release.is_set()  # all of that while the webhook was still waiting for its answer
    release.set()
    receiver.wait(about(second), count=2)


def test_an_orders_events_arrive_in_order(gw, hook, peers, ids):
    shop, courier = ids("shop"), ids("c")
    def unsteady(hit: Hit) -> tuple[int, dict[str, str]]:
        time.sleep(0.03 * (hash(hit.body) % 3))  # answers at uneven speeds: order must not depend on them
        return 204, {}

    receiver, _, _ = hook(gw, unsteady, events="order_event")
    operator = peers(gw.port, subscribe=("operator/errors",))
    placed = [ids(f"A{i}") for i in range(3)]
    for oid in placed:
        operator.publish("orders/in", order(order_id=oid, shop_id=shop, courier_id=None))
    for oid in placed:
        for command in ({"command": "assign", "courier_id": courier}, {"command": "packed"}, {"command": "cancel"}):
            operator.publish("operator/commands", {**command, "order_id": oid})
    for oid in placed:
        hits = receiver.wait(about(oid), count=4)
        assert [h.json["data"]["kind"] for h in hits][:4] == ["created", "assigned", "status", "status"]
        assert [h.json["data"]["status"] for h in hits][2:4] == ["packed", "cancelled"]


def test_410_disables_the_endpoint_until_it_is_enabled(gw, hook, peers, ids):
    oid, later = ids("A"), ids("B")
    gone = threading.Event()
    gone.set()
    receiver, endpoint, _ = hook(gw, lambda hit: (410, {}) if gone.is_set() else (204, {}), events="ack")
    ordersys = peers(gw.port)
    ordersys.publish("orders/in", order(order_id=oid, shop_id=ids("shop"), courier_id=None))
    receiver.wait(about(oid))

    def state() -> dict[str, Any]:
        listed = gw.cli("webhooks", "list", "--json").stdout.splitlines()
        return next(json.loads(line) for line in listed if json.loads(line)["endpoint_id"] == endpoint)

    eventually(lambda: not state()["enabled"], "the endpoint disabled")
    assert "410" in state()["disabled_reason"]
    ordersys.publish("orders/in", order(order_id=later, shop_id=ids("shop"), courier_id=None))
    eventually(lambda: state()["pending"] == 2, "deliveries waiting")
    gone.clear()
    assert gw.cli("webhooks", "enable", endpoint).returncode == 0
    receiver.wait(about(later))
    assert receiver.wait(about(oid), count=2)[-1].headers["webhook-id"] == receiver.hits[0].headers["webhook-id"]


def test_a_refused_delivery_is_kept_for_a_retry_by_hand(gw, hook, peers, ids):
    oid = ids("A")
    refuse = threading.Event()
    refuse.set()
    receiver, _, _ = hook(gw, lambda hit: (400, {}) if refuse.is_set() else (204, {}), events="ack")
    peers(gw.port).publish("orders/in", order(order_id=oid, shop_id=ids("shop"), courier_id=None))
    [first] = receiver.wait(about(oid))
    [failed] = eventually(lambda: [d for d in deliveries(gw, "--failed")
                                   if d["webhook_id"] == first.headers["webhook-id"]], "a failed delivery")
    assert failed["state"] == "failed" and failed["last_status"] == 400
    shown = gw.cli("webhooks", "deliveries", "--failed")
    assert str(failed["id"]) in shown.stdout and all(len(line) <= 80 for line in shown.stdout.splitlines())
    refuse.clear()
    assert gw.cli("webhooks", "retry", str(failed["id"])).returncode == 0
    second = receiver.wait(about(oid), count=2)[-1]
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    assert gw.cli("webhooks", "retry", str(failed["id"])).returncode == 1


def test_a_delivery_is_given_up_after_give_up_hours(spawn, on_store, hook, peers, ids):
    gw = spawn(config={"webhooks": {**FAST_RETRIES["webhooks"], "give_up_hours": 0.0005}, **on_store})  # 1.8 s
    receiver, _, _ = hook(gw, lambda hit: (500, {}), events="ack")
    oid = ids("A")
    peers(gw.port).publish("orders/in", order(order_id=oid, shop_id=ids("shop")))
    receiver.wait(about(oid), count=2)
    eventually(lambda: [d for d in deliveries(gw, "--failed") if d["state"] == "gave_up"], "given up")


def test_a_kill_9_mid_delivery_loses_nothing(spawn, on_store, hook, peers, ids):
    config = {**FAST_RETRIES, **on_store}
    gw = spawn(config=config)
    released, calls = threading.Event(), []

    def first_held(hit: Hit) -> tuple[int, dict[str, str]]:
        calls.append(hit)
        if len(calls) == 1:
            released.wait(DEADLINE)
        return 204, {}

    receiver, _, _ = hook(gw, first_held, events="ack")
    oid = ids("A")
    peers(gw.port).publish("orders/in", order(order_id=oid, shop_id=ids("shop")))
    [first] = receiver.wait(about(oid))  # held: the gateway waits for our answer
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGKILL)
    gw.proc.wait(DEADLINE)
    released.set()
    again = spawn(data_dir=gw.data_dir, config=config)
    second = receiver.wait(about(oid), count=2)[-1]
    assert second.headers["webhook-id"] == first.headers["webhook-id"] and second.body == first.body
    eventually(lambda: [d for d in deliveries(again) if d["webhook_id"] == first.headers["webhook-id"]
                        and d["state"] == "delivered"], "delivered after the restart")
