"""The HTTP side with real httpx clients against a real gateway: orders in, commands, uploads, the read API,
health, auth, bad input, metrics and the OpenAPI document."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import gpxpy
import httpx
import pytest
from conftest import JPEG, ORDER, ROOT, GatewayProcess, eventually, fieldgate, fix, launch, order, store_config
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from gateway import schemas
from gateway.bridge.service import Gateway, Handled, Inbound
from gateway.config import Settings
from gateway.core.acl import Role
from gateway.http.auth import HttpAuth, RateLimit
from gateway.http.problems import HttpProblem
from gateway.http.reader import Reader
from gateway.store.tables import Store
from gateway.web.session import Sessions

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[GatewayProcess]:
    """A gateway for this module, on each store: no request-rate limit (the property test sends many)."""
    process = launch(tmp_path_factory.mktemp("http"), config={"http": {"max_request_rate": 0}, "log_level": "DEBUG",
                                                              **store_config(request, "http")})
    yield process
    process.kill()


def bearer(gw: GatewayProcess, role: str, user_id: str, *, expires: datetime | None = None) -> dict[str, str]:
    """A user of `role` with id `user_id` and a new bearer token of it, made in the gateway's store (what
    `fieldgate users add` and `fieldgate tokens create` do); the Authorization header."""
    name = f"{role}-{user_id}"
    store = Store(gw.store, create=False)
    try:
        if store.users.get(name) is None:
            store.users.add(name, Role(role), user_id, f"pw-{name}")
        with store.transaction():
            _, token = store.tokens.create(name, expires)
    finally:
        store.close()
    return {"Authorization": f"Bearer {token}"}


def client(gw: GatewayProcess, headers: dict[str, str] | None = None) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers=headers or {}, timeout=15)


def problem_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["type"].startswith("/problems/") and body["detail"]
    return body


def dead_letters(gw: GatewayProcess) -> int:
    return json.loads(gw.cli("stats", "--json").stdout)["dead_letters"]


# ---------------------------------------------------------------- health, auth


def test_health_and_readiness_answer_without_credentials(gw):
    with client(gw) as http:
        assert http.get("/healthz").json() == {"status": "ok", "checks": {}}
        ready = http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"broker": True, "bridge": True, "databases": True}
        problem_of(http.get("/api/v1/orders"), 401)
        assert "Bearer" in http.get("/api/v1/orders").headers["www-authenticate"]


def test_basic_credentials_and_tokens_and_their_revocation(gw, ids):
    shop = ids("shop")
    headers = bearer(gw, "shop", shop)
    name = f"shop-{shop}"
    with client(gw) as http:
        assert http.get("/api/v1/orders", auth=(name, f"pw-{name}")).status_code == 200
        assert problem_of(http.get("/api/v1/orders", auth=(name, "wrong")), 401)["detail"] == \
            "wrong user name or password"
        assert http.get("/api/v1/orders", headers=headers).status_code == 200
        listed = gw.cli("tokens", "list", "--json")
        token_id = next(json.loads(line)["token_id"] for line in listed.stdout.splitlines()
                        if json.loads(line)["user"] == name)
        assert gw.cli("tokens", "revoke", token_id).returncode == 0
        assert "revoked" in problem_of(http.get("/api/v1/orders", headers=headers), 401)["detail"]
        made = gw.cli("tokens", "create", name, "--expires", "2020-01-01T00:00:00+00:00")
        expired = made.stdout.strip().splitlines()[-1]
        problem_of(http.get("/api/v1/orders", headers={"Authorization": f"Bearer {expired}"}), 401)
        problem_of(http.get("/api/v1/orders", headers={"Authorization": "Digest abc"}), 401)


def test_basic_credentials_are_refused_from_another_machine_without_tls(gw):
    reader = Reader(gw.store)
    try:
        sessions = Sessions(bytes(32), timedelta(hours=1))
        plain = HttpAuth(reader, sessions, tls=False, local_token="", rate=0)
        with pytest.raises(HttpProblem, match="only taken over TLS or from this machine"):
            plain.identify("Basic dXNlcjpwYXNz", "192.0.2.7")
        over_tls = HttpAuth(reader, sessions, tls=True, local_token="", rate=0)
        with pytest.raises(HttpProblem, match="wrong user name or password"):
            over_tls.identify("Basic dXNlcjpwYXNz", "192.0.2.7")
    finally:
        reader.close()


def test_a_user_over_its_request_rate_waits():
    limit = RateLimit(5)
    answers = [limit.take("erp") for _ in range(30)]
    assert [ok for ok, _ in answers[:10]] == [True] * 10  # a burst of two seconds' worth
    assert not answers[10][0] and answers[10][1] >= 1
    assert all(ok for ok, _ in (RateLimit(0).take("erp") for _ in range(1000)))


# ---------------------------------------------------------------- orders in


def test_an_order_by_http_takes_the_mqtt_path(gw, peers, ids):
    oid, shop = ids("A"), ids("shop")
    erp = bearer(gw, "ordersys", ids("erp"))
    acks = peers(gw.port, subscribe=("ordersys/acks",))
    terminal = peers(gw.port, subscribe=(f"shops/{shop}/orders",))
    placed = order(order_id=oid, shop_id=shop, courier_id=None)
    with client(gw, erp) as http:
        first = http.post("/api/v1/orders", json=placed)
        assert first.status_code == 202, first.text
        body = first.json()
        link = body.pop("tracking_url")
        assert body == {"order_id": oid, "status": "created", "duplicate": False}
        assert link.startswith(f"{gw.url}/t/")
        [ack] = acks.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["kind"] == "accepted")
        assert ack["tracking_url"] == link
        terminal.wait_for(f"shops/{shop}/orders", lambda e: e["kind"] == "created")
        again = http.post("/api/v1/orders", json=placed)
        assert again.status_code == 200 and again.json()["duplicate"] is True
        assert again.json()["tracking_url"] == link  # the same link every time
        changed = http.post("/api/v1/orders", json={**placed, "notes": "ring twice"})
        assert changed.status_code == 202 and changed.json()["duplicate"] is False
        detail = http.get(f"/api/v1/orders/{oid}").json()
    assert detail["order"]["notes"] == "ring twice" and detail["state"]["status"] == "created"
    assert [e["kind"] for e in detail["timeline"]] == ["created", "updated"]


def test_an_idempotency_key_answers_the_same_and_refuses_another_body(gw, ids):
    oid = ids("A")
    erp = bearer(gw, "ordersys", ids("erp"))
    with client(gw, erp) as http:
        key = {"Idempotency-Key": ids("key")}
        first = http.post("/api/v1/orders", json=order(order_id=oid), headers=key)
        replay = http.post("/api/v1/orders", json=order(order_id=oid), headers=key)
        assert first.status_code == replay.status_code == 202  # the kept answer, not "200 duplicate"
        assert replay.json() == first.json()
        other = problem_of(http.post("/api/v1/orders", json=order(order_id=ids("B")), headers=key), 409)
        assert other["type"] == "/problems/key-reused"
        problem_of(http.post("/api/v1/orders", json=order(order_id=ids("C")), headers={"Idempotency-Key": ""}), 400)


def test_an_idempotency_key_is_honoured_for_24_hours(tmp_path, store_at):
    now = [datetime(2026, 11, 22, 9, tzinfo=UTC).timestamp()]
    store = Store(store_at)
    gateway = Gateway(store, Settings(storage={"data_dir": tmp_path}), clock=lambda: now[0])
    message = Inbound("orders/in", json.dumps(ORDER).encode())

    def respond(handled: Handled) -> tuple[int, bytes]:
        return (409, b"refused") if handled.refused else (202, str(now[0]).encode())

    _, first = gateway.request(message, respond, key=("erp", "k1"))
    now[0] += 23 * 3600
    _, within = gateway.request(message, respond, key=("erp", "k1"))
    now[0] += 2 * 3600
    _, after = gateway.request(message, respond, key=("erp", "k1"))
    assert within == first and after != first and after[0] == 202
    store.close()


BAD_ORDERS = [
    pytest.param(b'{"order_id": "A1", ', "application/json", 400, "not-json", id="malformed-json"),
    pytest.param(json.dumps({**ORDER, "items": "roses"}).encode(), "application/json", 422, "invalid", id="wrong-type"),
    pytest.param(json.dumps({**ORDER, "surprise": 1}).encode(), "application/json", 422, "invalid", id="extra-field"),
    pytest.param(b"x" * 70_000, "application/json", 413, "too-large", id="oversized"),
    pytest.param(json.dumps(ORDER).encode(), "text/plain", 415, "unsupported-type", id="not-json-type"),
    pytest.param(b"\xff\xfe\x00", "application/json", 400, "not-json", id="not-utf8"),
]


@pytest.mark.parametrize(("body", "content_type", "status", "kind"), BAD_ORDERS)
def test_bad_orders_get_a_problem_a_dead_letter_and_a_rejection(gw, peers, ids, body, content_type, status, kind):
    erp = bearer(gw, "ordersys", ids("erp"))
    errors = peers(gw.port, subscribe=("ordersys/errors",))
    before = dead_letters(gw)
    with client(gw, erp) as http:
        refused = problem_of(http.post("/api/v1/orders", content=body, headers={"content-type": content_type}),
                             status)
        assert refused["type"] == f"/problems/{kind}" and refused["hint"]
        if kind == "invalid":
            assert refused["errors"] and all(e["loc"] and e["msg"] for e in refused["errors"])
        errors.wait_for("ordersys/errors", lambda r: r["reason"] == refused["detail"])
        assert dead_letters(gw) == before + 1
        assert http.get("/healthz").status_code == 200


def test_who_may_write_what(gw, peers, ids):
    oid, shop, other, courier = ids("A"), ids("shop"), ids("other"), ids("c")
    erp = bearer(gw, "ordersys", ids("erp"))
    with client(gw, erp) as http:
        assert http.post("/api/v1/orders", json=order(order_id=oid, shop_id=shop, courier_id=None)).status_code == 202
        problem_of(http.post(f"/api/v1/orders/{oid}/commands", json={"command": "packed"}), 403)
    with client(gw, bearer(gw, "courier", courier)) as http:
        problem_of(http.post("/api/v1/orders", json=order(order_id=ids("B"))), 403)
        problem_of(http.post(f"/api/v1/orders/{oid}/commands", json={"command": "packed"}), 403)
    with client(gw, bearer(gw, "shop", other)) as http:  # another shop's order: NotYours, dead-lettered
        before = dead_letters(gw)
        refused = problem_of(http.post(f"/api/v1/orders/{oid}/commands", json={"command": "cancel"}), 403)
        assert refused["order_id"] == oid and dead_letters(gw) == before + 1
        problem_of(http.get(f"/api/v1/orders/{oid}"), 403)
        problem_of(http.get("/api/v1/orders", params={"shop": shop}), 403)


# ---------------------------------------------------------------- commands and uploads


def test_shop_and_operator_commands_by_http(gw, peers, ids):
    oid, shop, courier = ids("A"), ids("shop"), ids("c")
    phone = peers(gw.port, subscribe=(f"couriers/{courier}/tasks",))
    with client(gw, bearer(gw, "ordersys", ids("erp"))) as http:
        http.post("/api/v1/orders", json=order(order_id=oid, shop_id=shop, courier_id=None)).raise_for_status()
    with client(gw, bearer(gw, "operator", ids("ops"))) as http:
        assigned = http.post(f"/api/v1/orders/{oid}/commands", json={"command": "assign", "courier_id": courier})
        assert assigned.status_code == 200 and assigned.json()["status"] == "assigned"
        assert assigned.json()["order"]["courier_id"] == courier
    phone.wait_for(f"couriers/{courier}/tasks", lambda t: t["order_id"] == oid and t["kind"] == "assign")
    with client(gw, bearer(gw, "shop", shop)) as http:
        packed = http.post(f"/api/v1/orders/{oid}/commands", json={"command": "packed"})
        assert packed.json()["result"] == "done" and packed.json()["status"] == "packed"
        assert http.post(f"/api/v1/orders/{oid}/commands", json={"command": "packed"}).json()["result"] == "unchanged"
        mismatch = problem_of(http.post(f"/api/v1/orders/{oid}/commands",
                                        json={"command": "packed", "order_id": ids("B")}), 422)
        assert mismatch["errors"][0]["loc"] == "order_id"
        problem_of(http.post(f"/api/v1/orders/{ids('nope')}/commands", json={"command": "packed"}), 404)
        problem_of(http.post(f"/api/v1/orders/{oid}/commands", json={"command": "assign"}), 422)
        http.post(f"/api/v1/orders/{oid}/commands", json={"command": "cancel"}).raise_for_status()
        illegal = problem_of(http.post(f"/api/v1/orders/{oid}/commands",
                                       json={"command": "assign", "courier_id": courier}), 409)
        assert illegal["type"] == "/problems/conflict"


def test_uploads_by_http_take_the_media_topics_checks(gw, peers, ids):
    oid, shop, courier = ids("A"), ids("shop"), ids("c")
    with client(gw, bearer(gw, "ordersys", ids("erp"))) as http:
        http.post("/api/v1/orders", json=order(order_id=oid, shop_id=shop, courier_id=courier)).raise_for_status()
    with client(gw, bearer(gw, "courier", courier)) as http:
        stored = http.post(f"/api/v1/orders/{oid}/media", params={"kind": "proof_of_delivery"}, content=JPEG)
        assert stored.status_code == 201, stored.text
        assert stored.json()["content_type"] == "image/jpeg" and stored.json()["size"] == len(JPEG)
        problem_of(http.post(f"/api/v1/orders/{oid}/media", params={"kind": "packed"}, content=b"MZ\x90\x00exe"), 415)
        problem_of(http.post(f"/api/v1/orders/{oid}/media", params={"kind": "selfie"}, content=JPEG), 400)
        problem_of(http.post(f"/api/v1/orders/{oid}/media", params={"kind": "packed"},
                             content=JPEG + b"\0" * 2_200_000), 413)
        timeline = http.get(f"/api/v1/orders/{oid}").json()["timeline"]
    assert any(e["kind"] == "media" and e["media_id"] == stored.json()["media_id"] for e in timeline)
    with client(gw, bearer(gw, "courier", ids("stranger"))) as http:
        problem_of(http.post(f"/api/v1/orders/{oid}/media", params={"kind": "packed"}, content=JPEG), 403)


@pytest.fixture(scope="module")
def fuzzer(gw: GatewayProcess) -> dict[str, str]:
    return bearer(gw, "ordersys", "fuzz")


@settings(max_examples=40, deadline=None)
@given(body=st.one_of(st.binary(max_size=300),
                      st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                                   lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                                       st.sampled_from(list(ORDER)) | st.text(max_size=8), inner, max_size=6),
                                   max_leaves=12).map(lambda v: json.dumps(v).encode())))
def test_no_body_takes_the_http_side_down(gw, fuzzer, body):
    with client(gw, fuzzer) as http:
        answer = http.post("/api/v1/orders", content=body, headers={"content-type": "application/json"})
        assert answer.status_code in (200, 202, 400, 403, 409, 413, 422), answer.text
        if answer.status_code >= 400:
            assert answer.headers["content-type"] == PROBLEM and answer.json()["detail"]


# ---------------------------------------------------------------- the read API


def test_orders_page_by_cursor_and_each_role_sees_its_own(gw, ids):
    shop, courier = ids("shop"), ids("c")
    placed = [ids(f"A{i}") for i in range(5)]
    with client(gw, bearer(gw, "ordersys", ids("erp"))) as http:
        for i, oid in enumerate(placed):
            http.post("/api/v1/orders", json=order(order_id=oid, shop_id=shop,
                                                   courier_id=courier if i < 2 else None)).raise_for_status()
        pages, cursor = [], None
        for _ in range(5):
            page = http.get("/api/v1/orders", params={"shop": shop, "limit": 2, **({"cursor": cursor} if cursor
                                                                                   else {})}).json()
            pages.append([o["order_id"] for o in page["orders"]])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        problem_of(http.get("/api/v1/orders", params={"cursor": "not-a-cursor"}), 400)
        problem_of(http.get("/api/v1/orders", params={"status": "lost"}), 400)
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [oid for p in pages for oid in p] == placed[::-1]
    with client(gw, bearer(gw, "shop", shop)) as http:
        assert {o["order_id"] for o in http.get("/api/v1/orders", params={"limit": 500}).json()["orders"]} == \
            set(placed)
        assert len(http.get("/api/v1/orders", params={"status": "assigned"}).json()["orders"]) == 2
    with client(gw, bearer(gw, "courier", courier)) as http:
        assert {o["order_id"] for o in http.get("/api/v1/orders").json()["orders"]} == set(placed[:2])
        problem_of(http.get(f"/api/v1/orders/{placed[4]}"), 403)
        problem_of(http.get(f"/api/v1/orders/{ids('nope')}"), 404)


def test_couriers_and_their_tracks_as_json_geojson_and_gpx(gw, peers, ids):
    courier, shop = ids("c"), ids("shop")
    phone = peers(gw.port, subscribe=(f"couriers/{courier}/errors",))
    start = int(time.time()) - 600
    path = [(31.2300 + i * 0.001, 121.4700 + i * 0.0005) for i in range(6)]
    for i, (lat, lon) in enumerate(path):
        phone.publish(f"couriers/{courier}/gps", {**fix(lat, lon), "tst": start + 60 * i, "alt": 12.0, "vel": 15})
    ops = bearer(gw, "operator", ids("ops"))
    with client(gw, ops) as http:
        eventually(lambda: len(http.get(f"/api/v1/couriers/{courier}/track").json()["fixes"]) == 6, "six fixes")
        listed = {c["courier_id"]: c for c in http.get("/api/v1/couriers").json()["couriers"]}
        assert listed[courier]["online"] is True and listed[courier]["fix"]["lat"] == pytest.approx(path[-1][0])
        window = {"from": str(start + 60), "to": datetime.fromtimestamp(start + 240, UTC).isoformat()}
        part = http.get(f"/api/v1/couriers/{courier}/track", params=window).json()
        assert [f["tst"] for f in part["fixes"]] == [start + 60 * i for i in (1, 2, 3, 4)]
        geo = http.get(f"/api/v1/couriers/{courier}/track", params={**window, "format": "geojson"})
        assert geo.headers["content-type"] == "application/geo+json"
        line, *points = geo.json()["features"]
        assert line["geometry"] == {"type": "LineString", "coordinates": [[lon, lat] for lat, lon in path[1:5]]}
        assert [p["geometry"]["type"] for p in points] == ["Point"] * 4
        gpx = http.get(f"/api/v1/couriers/{courier}/track", params={"format": "gpx"})
        assert gpx.headers["content-type"] == "application/gpx+xml"
        parsed = gpxpy.parse(gpx.text)
        [segment] = parsed.tracks[0].segments
        assert [(p.latitude, p.longitude) for p in segment.points] == [pytest.approx(p) for p in path]
        assert segment.points[0].time.timestamp() == start and segment.points[0].elevation == 12.0
        problem_of(http.get(f"/api/v1/couriers/{courier}/track", params={"from": "yesterday"}), 400)
        problem_of(http.get(f"/api/v1/couriers/{courier}/track", params={"format": "kml"}), 400)
    with client(gw, bearer(gw, "courier", courier)) as http:
        assert len(http.get(f"/api/v1/couriers/{courier}/track").json()["fixes"]) == 6
        assert [c["courier_id"] for c in http.get("/api/v1/couriers").json()["couriers"]] == [courier]
        problem_of(http.get(f"/api/v1/couriers/{ids('other')}/track"), 403)
    with client(gw, bearer(gw, "shop", shop)) as http:
        assert http.get("/api/v1/couriers").json()["couriers"] == []  # none of its couriers yet
        problem_of(http.get(f"/api/v1/couriers/{courier}/track"), 403)
        problem_of(http.get("/api/v1/stats"), 403)
    with client(gw, bearer(gw, "ordersys", ids("erp"))) as http:
        problem_of(http.get("/api/v1/couriers"), 403)


def test_stats_for_operators(gw, ids):
    with client(gw, bearer(gw, "operator", ids("ops"))) as http:
        stats = http.get("/api/v1/stats").json()
    assert {"orders", "orders_by_status", "dead_letters", "performance"} <= set(stats)


# ---------------------------------------------------------------- metrics


def scrape(http: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = http.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    families = list(text_string_to_metric_families(answer.text))
    for family in families:
        assert family.name.startswith("fieldgate_"), family.name
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def test_metrics_move_with_the_traffic(gw, peers, ids):
    oid, courier = ids("A"), ids("c")
    ops = bearer(gw, "operator", ids("ops"))
    phone = peers(gw.port, subscribe=(f"couriers/{courier}/tasks", f"couriers/{courier}/errors"))
    with client(gw, ops) as http:
        before = scrape(http)
        with client(gw, bearer(gw, "ordersys", ids("erp"))) as erp:
            erp.post("/api/v1/orders", json=order(order_id=oid, courier_id=courier)).raise_for_status()
            erp.post("/api/v1/orders", content=b"{", headers={"content-type": "application/json"})
        [task] = phone.wait_for(f"couriers/{courier}/tasks")
        phone.publish(f"couriers/{courier}/receipts", {"msg_ids": [task["msg_id"]]})
        phone.publish(f"couriers/{courier}/gps", fix())
        gps = ("fieldgate_messages_in_total", (("topic", "couriers/{courier_id}/gps"),))
        receipts = ("fieldgate_task_receipt_seconds_count", ())
        # the receipt and the fix may be handled in two batches (always so with the bridge over MQTT): wait for both
        after = eventually(lambda: (now := scrape(http)).get(receipts, 0) > before.get(receipts, 0)
                           and now.get(gps, 0) > before.get(gps, 0) and now, "the receipt and the fix counted")

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert moved("fieldgate_messages_in_total", topic="orders/in") == 2
    assert moved("fieldgate_messages_in_total", topic="couriers/{courier_id}/gps") >= 1
    assert moved("fieldgate_messages_out_total", topic="couriers/{courier_id}/tasks") >= 1
    assert moved("fieldgate_rejections_total", reason="not_json") == 1
    assert moved("fieldgate_bridge_batch_seconds_count") >= 1 and moved("fieldgate_broker_commit_seconds_count") >= 1
    assert moved("fieldgate_http_requests_total", route="/api/v1/orders", status="202") == 1
    assert after[("fieldgate_connections", (("listener", "mqtt"), ("role", "local")))] >= 1
    # The bridge joins the embedded broker in process; with a PostgreSQL store, over loopback MQTT.
    joined = "in_process" if isinstance(gw.store, Path) else "mqtt"
    assert after[("fieldgate_connections", (("listener", joined), ("role", "gateway")))] == 1
    assert after[("fieldgate_orders", (("status", "assigned"),))] >= 1
    assert ("fieldgate_session_queue_depth", ()) in after and ("fieldgate_webhook_backlog", ()) in after
    assert ("fieldgate_session_dropped_total", ()) in after and ("fieldgate_webhook_queue_age_seconds", ()) in after
    with client(gw, bearer(gw, "shop", ids("shop"))) as http:
        problem_of(http.get("/metrics"), 403)


# ---------------------------------------------------------------- the OpenAPI document


def test_the_served_openapi_document_is_the_checked_in_one(gw):
    with client(gw) as http:
        served = http.get("/openapi.json").json()
    assert served == json.loads((ROOT / "schemas" / schemas.OPENAPI).read_text())
    for path in ("/api/v1/orders", "/api/v1/orders/{order_id}/commands", "/api/v1/couriers/{courier_id}/track",
                 "/metrics", "/healthz", "/readyz"):
        assert path in served["paths"]
    body = served["paths"]["/api/v1/orders"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Order"}
    assert served["components"]["securitySchemes"].keys() == {"HTTPBasic", "HTTPBearer"}


def test_https_with_the_tls_files(spawn, tmp_path):
    assert fieldgate("certs", "dev", "--dir", str(tmp_path / "certs")).returncode == 0
    cert, key = tmp_path / "certs" / "cert.pem", tmp_path / "certs" / "key.pem"
    gw = spawn(config={"http": {"tls": True}, "tls": {"certfile": str(cert), "keyfile": str(key)}})
    with httpx.Client(verify=ssl.create_default_context(cafile=str(cert))) as http:
        assert http.get(f"https://localhost:{gw.http_port}/healthz").status_code == 200
    local = gw.data_dir / "local-http.json"
    assert json.loads(local.read_text())["url"].startswith("https://") and local.stat().st_mode & 0o077 == 0


def test_a_taken_http_port_is_one_clear_error(spawn, tmp_path):
    first = spawn()
    second = spawn("--http-port", str(first.http_port), data_dir=tmp_path / "other", ready="^hint: ")
    assert second.proc is not None and second.proc.wait(15) == 1
    [error] = [line for line in second.lines if line.startswith("error: ")]
    assert f"could not listen on 127.0.0.1:{first.http_port}" in error
    assert "http.port" in second.lines[-1] or any("--http-port" in line for line in second.lines)
