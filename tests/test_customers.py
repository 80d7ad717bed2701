"""Customers and conversations: notices with quiet hours, per-order chat with history and read receipts, photos as
proof of delivery, ratings. Notices' timing on a fake clock (no broker); everything else through the real broker."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import JPEG, GatewayProcess, Peer, eventually, fieldgate, launch, order, register, store_config

from gateway.bridge.service import Gateway, Inbound
from gateway.config import Settings
from gateway.core import notices
from gateway.core.media import sniff
from gateway.core.models import Courier, Shop
from gateway.errors import ConfigError
from gateway.store.media import MediaFiles
from gateway.store.queries import Queries
from gateway.store.tables import Store

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
OPUS = b"OggS\x00\x02" + b"\x00" * 22 + b"OpusHead" + b"\x01" * 32
M4A = b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00" + b"\x00" * 32
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 32


def test_files_are_recognised_by_their_bytes_not_their_names():
    assert [sniff(b) for b in (JPEG, PNG, OPUS, M4A, WEBP)] == [
        "image/jpeg", "image/png", "audio/ogg", "audio/mp4", "image/webp"]
    for other in (b"GIF89a", b"%PDF-1.7", b"PK\x03\x04", b"OggS" + b"\x00" * 40 + b"vorbis", b"", b"\xff\xd8"):
        assert sniff(other) is None


def test_quiet_hours_span_midnight_in_the_shops_time_zone():
    shanghai = "Asia/Shanghai"  # UTC+8
    at = lambda h, m=0: datetime(2026, 11, 22, h, m, tzinfo=UTC)  # noqa: E731
    assert notices.quiet_until("22:00-08:00", shanghai, at(13)) is None  # 21:00 local
    assert notices.quiet_until("22:00-08:00", shanghai, at(15)) == datetime(2026, 11, 23, 0, 0, tzinfo=UTC)  # 23:00
    assert notices.quiet_until("22:00-08:00", shanghai, at(20)) == datetime(2026, 11, 23, 0, 0, tzinfo=UTC)  # 04:00
    assert notices.quiet_until("22:00-08:00", shanghai, at(0)) is None  # 08:00 local: over
    assert notices.quiet_until("12:00-14:00", shanghai, at(5)) == datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
    assert notices.quiet_until(None, shanghai, at(15)) is None


def test_a_typo_in_a_template_is_a_configuration_error_at_start(tmp_path):
    from gateway.config import load_settings

    conf = tmp_path / "broker.yaml"
    conf.write_text("notices:\n  templates:\n    en:\n      picked_up: '{courer_name} has it'\n")
    with pytest.raises(ConfigError, match=r"notices.templates.en.picked_up: unknown placeholder \{courer_name\}"):
        load_settings(conf)
    conf.write_text("notices:\n  templates:\n    fr:\n      picked_up: 'en route'\n")
    with pytest.raises(ConfigError, match="unknown locale"):
        load_settings(conf)


# ---------------------------------------------------------------- notices on a fake clock


class Clock:
    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, local_hour: int, local_minute: int = 0, day: int = 22) -> None:
        """Move to a time of day in Shanghai (UTC+8), 22 November 2026 (or `day`)."""
        self.now = datetime(2026, 11, day, local_hour, local_minute, tzinfo=UTC).timestamp() - 8 * 3600


def night_gateway(path: Path, store_at: Path | str, clock: Clock, **settings: Any) -> Gateway:
    store = Store(store_at)
    with store.transaction():
        store.put_shop(Shop(shop_id="rose", name="Rose & Lily", lat=31.23, lon=121.47, locale="en",
                            timezone="Asia/Shanghai", quiet_hours="22:00-08:00"), datetime.now(UTC))
        store.put_courier(Courier(courier_id="c7", name="Zhang Wei", shops=["rose"]))
    return Gateway(store, Settings.model_validate({"storage": {"data_dir": str(path)}, **settings}), clock=clock)


def send(gw: Gateway, topic: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The notices this message publishes at once."""
    rows = gw.handle_batch([Inbound(topic, json.dumps(payload).encode())])
    return [json.loads(m.payload) for _, m in rows if m.topic == "ordersys/notices"]


def timers(gw: Gateway) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for _, m in gw.run_timers() if m.topic == "ordersys/notices"]


def test_a_notice_in_quiet_hours_waits_for_their_end_survives_a_restart_and_only_the_latest_news_is_sent(
        tmp_path, store_at):
    clock = Clock(datetime(2026, 11, 22, tzinfo=UTC))
    clock.set(21, 0)
    gw = night_gateway(tmp_path, store_at, clock)
    [confirmed] = send(gw, "orders/in", order(courier_id="c7", window=None))
    assert (confirmed["kind"], confirmed["deferred"], confirmed["urgent"]) == ("confirmed", False, False)
    assert confirmed["text"] == "Rose & Lily has confirmed your order A1001; delivery by the end of the day."
    clock.set(23, 0)
    assert send(gw, "couriers/c7/status", {"order_id": "A1001", "status": "picked_up"}) == []  # 23:00: it waits
    clock.set(23, 40)
    assert send(gw, "couriers/c7/status", {"order_id": "A1001", "status": "delivered"}) == []
    gw.store.close()

    gw = night_gateway(tmp_path, store_at, clock)  # a restart loses nothing and sends nothing twice
    clock.set(7, 59, day=23)
    assert timers(gw) == []
    clock.set(8, 0, day=23)
    [morning] = timers(gw)
    assert (morning["kind"], morning["deferred"]) == ("delivered", True)  # the picked_up one is obsolete
    assert "delivered" in morning["text"] and "1 to 5 stars" in morning["text"]
    assert timers(gw) == []
    kept = {n["kind"]: n for n in Queries(store_at).notices_of("A1001")}
    assert kept["picked_up"]["dropped_at"] and not kept["picked_up"]["sent_at"]
    assert kept["delivered"]["sent_at"]


def test_urgent_notices_go_out_at_night_and_texts_follow_the_shops_locale_and_templates(tmp_path, store_at):
    clock = Clock(datetime(2026, 11, 22, tzinfo=UTC))
    clock.set(23, 30)
    gw = night_gateway(tmp_path, store_at, clock, notices={"templates": {"en": {
        "exception": "{shop_name}: order {order_id} hit a snag ({reason}); new time {eta_time}."}}})
    [urgent_order] = send(gw, "orders/in", order(order_id="U1", courier_id="c7", priority="urgent"))
    assert urgent_order["urgent"] is True and urgent_order["deferred"] is False
    assert send(gw, "orders/in", order(order_id="N1", courier_id="c7")) == []  # normal priority: waits
    [problem] = send(gw, "couriers/c7/status", {"order_id": "N1", "status": "exception",
                                               "reason_code": "vehicle_breakdown"})
    assert problem["kind"] == "exception" and problem["urgent"] is True
    assert problem["text"] == "Rose & Lily: order N1 hit a snag (the courier's vehicle broke down); new time to follow."
    with gw.store.transaction():
        gw.store.put_shop(Shop(shop_id="rose", name="玫瑰花店", lat=31.23, lon=121.47), datetime.now(UTC))
    [chinese] = send(gw, "couriers/c7/status", {"order_id": "N1", "status": "failed", "reason": "无人签收"})
    assert chinese["locale"] == "zh-CN" and chinese["text"] == "订单N1未能送达（无人签收），玫瑰花店会尽快联系您。"


# ---------------------------------------------------------------- through the broker

SMALL_MEDIA = 64 * 1024


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[GatewayProcess]:
    """The module's gateway, on each store: every test of it runs on both."""
    gateway = launch(tmp_path_factory.mktemp("customers"),
                     config={"media": {"max_bytes": SMALL_MEDIA}, "broker": {"max_packet_bytes": 16 * 1024},
                             **store_config(request, "customers")})
    yield gateway
    gateway.kill()


def setup_order(gw: GatewayProcess, peers: Callable[..., Peer], ids: Callable[[str], str], **shop: Any
                ) -> tuple[str, str, str, Peer]:
    """A registered shop and courier, an order assigned to it; an observer of everything customer-side."""
    shop_id, courier, oid = ids("shop"), ids("c"), ids("A")
    register(gw, shop_id, {courier: "Zhang Wei"}, locale="en", **shop)
    watch = peers(gw.port, subscribe=("ordersys/#", f"customers/{oid}/#", f"shops/{shop_id}/#",
                                      f"couriers/{courier}/#"))
    watch.publish("orders/in", order(order_id=oid, shop_id=shop_id, courier_id=courier))
    watch.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["kind"] == "assigned")
    return shop_id, courier, oid, watch


def test_notices_reach_the_order_system_and_the_customers_app_and_the_timeline(gw, peers, ids):
    _, courier, oid, watch = setup_order(gw, peers, ids)
    [confirmed] = watch.wait_for(f"customers/{oid}/notices", lambda n: n["kind"] == "confirmed")
    watch.publish(f"couriers/{courier}/gps", {"_type": "location", "lat": 31.30, "lon": 121.47,
                                              "tst": int(datetime.now(UTC).timestamp()) - 1})
    watch.publish(f"couriers/{courier}/status", {"order_id": oid, "status": "picked_up"})
    [picked] = watch.wait_for("ordersys/notices", lambda n: n["order_id"] == oid and n["kind"] == "picked_up")
    assert picked["text"].startswith("Zhang Wei has picked up your order") and "minutes" in picked["text"]
    assert watch.wait_for(f"customers/{oid}/notices", lambda n: n["kind"] == "picked_up")[0] == picked
    watch.publish(f"couriers/{courier}/status", {"order_id": oid, "status": "delivered"})
    watch.wait_for(f"customers/{oid}/notices", lambda n: n["kind"] == "delivered")
    shown = gw.cli("orders", "show", oid, columns=250).stdout
    assert "notice confirmed" in shown and "notice picked_up" in shown and "notice delivered" in shown
    assert confirmed["notice_id"] and confirmed["locale"] == "en"


def test_a_conversation_between_shop_courier_and_customer_with_history_and_read_receipts(gw, peers, ids):
    shop, courier, oid, watch = setup_order(gw, peers, ids)
    watch.publish(f"shops/{shop}/chat/in", {"order_id": oid, "msg_id": "s1", "text": "ribbon is red"})
    watch.publish(f"couriers/{courier}/chat/in", {"order_id": oid, "msg_id": "k1", "kind": "location",
                                                  "lat": 31.24, "lon": 121.48})
    watch.publish("ordersys/chat/in", {"order_id": oid, "msg_id": "u1", "from": "customer", "text": "gate code 4711"})
    watch.publish("ordersys/chat/in", {"order_id": oid, "msg_id": "u1", "from": "customer", "text": "gate code 4711"})
    messages = watch.wait_for(f"customers/{oid}/chat", lambda m: "seq" in m, count=3)
    assert [(m["seq"], m["from"]["role"], m["kind"]) for m in messages] == [
        (1, "shop", "text"), (2, "courier", "location"), (3, "customer", "text")]
    assert messages[1]["from"]["name"] == "Zhang Wei" and messages[2]["from"]["name"] == "Li"
    for topic in (f"shops/{shop}/chat", f"couriers/{courier}/chat", "ordersys/chat"):
        watch.wait_for(topic, lambda m: m.get("order_id") == oid and m.get("seq") == 3)

    watch.publish(f"couriers/{courier}/chat/read", {"order_id": oid, "read_up_to": 3})
    [read] = watch.wait_for(f"shops/{shop}/chat", lambda m: "read_up_to" in m)
    assert read["by"]["role"] == "courier" and read["read_up_to"] == 3

    helper = ids("helper")
    watch.subscribe(f"couriers/{helper}/#")
    watch.publish(f"shops/{shop}/commands", {"command": "assign", "order_id": oid, "courier_id": helper})
    [history] = watch.wait_for(f"couriers/{helper}/chat/history", lambda h: h["order_id"] == oid)  # mid-way: all
    assert [m["seq"] for m in history["messages"]] == [1, 2, 3] and history["more"] is False

    watch.publish(f"couriers/{courier}/chat/in", {"order_id": oid, "msg_id": "k2", "text": "still me?"})
    [refused] = watch.wait_for(f"couriers/{courier}/errors", lambda r: r["topic"].endswith("chat/in"))
    assert "not the courier of order" in refused["reason"] and "may read" in refused["reason"]
    watch.publish(f"couriers/{courier}/chat/history/get", {"order_id": oid, "after_seq": 1, "limit": 1})
    [page] = watch.wait_for(f"couriers/{courier}/chat/history", lambda h: h["order_id"] == oid)
    assert [m["seq"] for m in page["messages"]] == [2] and page["more"] is True  # earlier couriers read
    other = ids("othershop")
    watch.subscribe(f"shops/{other}/errors")
    watch.publish(f"shops/{other}/chat/in", {"order_id": oid, "msg_id": "x1", "text": "hello?"})
    assert watch.wait_for(f"shops/{other}/errors", lambda r: f"belongs to shop {shop}" in r["reason"])

    shown = gw.cli("orders", "chat", oid, columns=200).stdout
    assert "gate code 4711" in shown and f"courier {courier}" in shown and shown.count("gate code") == 1


def test_a_proof_of_delivery_photo_is_stored_acked_and_named_in_the_delivered_ack(gw, peers, ids, tmp_path):
    shop, courier, oid, watch = setup_order(gw, peers, ids, require_proof=True)
    watch.publish(f"couriers/{courier}/status", {"order_id": oid, "status": "picked_up"})
    watch.publish(f"couriers/{courier}/status", {"order_id": oid, "status": "delivered"})
    [refused] = watch.wait_for(f"couriers/{courier}/errors", lambda r: "proof-of-delivery" in r["reason"])
    assert "requires a proof-of-delivery photo" in refused["reason"]

    photo = JPEG * 3  # 6 KB: larger than nothing, well within media.max_bytes
    watch.publish(f"couriers/{courier}/media/{oid}/proof_of_delivery", photo)
    [ack] = watch.wait_for(f"couriers/{courier}/media/ack")
    assert (ack["order_id"], ack["kind"], ack["content_type"], ack["size"]) == (
        oid, "proof_of_delivery", "image/jpeg", len(photo))
    [event] = watch.wait_for(f"shops/{shop}/orders", lambda e: e["kind"] == "media")
    assert event["media_id"] == ack["media_id"]
    watch.wait_for(f"customers/{oid}/chat", lambda m: m.get("media_id") == ack["media_id"])
    sha = hashlib.sha256(photo).hexdigest()
    assert MediaFiles(gw.data_dir).path(sha).read_bytes() == photo  # content-addressed, on disk

    watch.publish(f"couriers/{courier}/status", {"order_id": oid, "status": "delivered", "media_id": ack["media_id"]})
    [delivered] = watch.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["status"] == "delivered")
    assert delivered["media_id"] == ack["media_id"]
    out = tmp_path / "proof.jpg"
    shown = gw.cli("media", "show", ack["media_id"], "--out", str(out))
    assert shown.returncode == 0 and out.read_bytes() == photo and "image/jpeg" in shown.stderr


def test_uploads_may_exceed_the_packet_limit_on_media_topics_only_and_bad_files_are_refused(gw, peers, ids):
    shop, courier, oid, watch = setup_order(gw, peers, ids)
    big = JPEG + b"\x00" * (40 * 1024)  # > broker.max_packet_bytes (16 KiB), < media.max_bytes (64 KiB)
    watch.publish(f"shops/{shop}/media/{oid}/packed", big)
    [ack] = watch.wait_for(f"shops/{shop}/media/ack")
    assert ack["size"] == len(big) and ack["kind"] == "packed"
    watch.publish(f"couriers/{courier}/media/{oid}/chat", JPEG + b"\x00" * SMALL_MEDIA)
    [too_big] = watch.wait_for(f"couriers/{courier}/errors", lambda r: "more than the" in r["reason"])
    assert f"more than the {SMALL_MEDIA} allowed" in too_big["reason"]
    watch.publish(f"couriers/{courier}/media/{oid}/chat", b"%PDF-1.7 not a photo")
    watch.wait_for(f"couriers/{courier}/errors", lambda r: "not a JPEG, PNG, WebP" in r["reason"])
    other = ids("intruder")
    watch.subscribe(f"couriers/{other}/errors")
    watch.publish(f"couriers/{other}/media/{oid}/chat", PNG)
    watch.wait_for(f"couriers/{other}/errors", lambda r: "is not the courier of order" in r["reason"])
    dead = [r["reason"] for r in gw.queries.query("SELECT reason FROM dead_letters WHERE order_id = ?", [oid])]
    assert len(dead) == 3

    stray = peers(gw.port, ids("stray"))
    stray.client.publish(f"shops/{shop}/notes", b"x" * (20 * 1024), qos=1)  # too big off the media topics
    eventually(lambda: not stray.client.is_connected(), "the oversized publisher disconnected")


def test_a_delivered_order_is_rated_once_and_stats_show_stars_and_punctuality(gw, peers, ids):
    shop, courier, oid, watch = setup_order(gw, peers, ids)
    watch.publish("ordersys/ratings/in", {"order_id": oid, "stars": 5})
    watch.wait_for("ordersys/errors", lambda r: r["order_id"] == oid and "only a delivered order" in r["reason"])
    watch.publish(f"couriers/{courier}/status", {"order_id": oid, "status": "delivered"})
    watch.publish("ordersys/ratings/in", {"order_id": oid, "stars": 4, "comment": "lovely roses"})
    [rated] = watch.wait_for(f"shops/{shop}/orders", lambda e: e["kind"] == "rated")
    assert rated["stars"] == 4 and rated["reason"] == "lovely roses"
    watch.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["kind"] == "rated")
    watch.publish("ordersys/ratings/in", {"order_id": oid, "stars": 1})
    watch.wait_for("ordersys/errors", lambda r: r["order_id"] == oid and "rated before" in r["reason"])
    stats = json.loads(gw.cli("stats", "--json").stdout)
    [mine] = [s for s in stats["performance"]["shops"] if s["shop_id"] == shop]
    assert mine["stars"] == 4.0 and mine["ratings"] == 1 and mine["delivered"] == 1
    assert mine["on_time_rate"] == 0.0  # the acceptance order's window ended long ago
    [rider] = [s for s in stats["performance"]["couriers"] if s["courier_id"] == courier]
    assert rider["stars"] == 4.0


def test_purge_removes_conversations_and_uploads_and_db_check_fix_removes_orphans(spawn, peers, ids):
    gw = spawn()
    _, courier, oid, watch = setup_order(gw, peers, ids)
    watch.publish(f"couriers/{courier}/media/{oid}/chat", OPUS)
    watch.wait_for(f"couriers/{courier}/media/ack")
    watch.publish("ordersys/chat/in", {"order_id": oid, "msg_id": "u1", "from": "customer", "text": "my flat is 4B"})
    watch.wait_for("ordersys/chat", lambda m: m.get("text") == "my flat is 4B")
    watch.publish(f"couriers/{courier}/status", {"order_id": oid, "status": "delivered"})
    watch.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["status"] == "delivered")
    files = MediaFiles(gw.data_dir)
    assert files.path(hashlib.sha256(OPUS).hexdigest()).exists()
    purged = fieldgate("orders", "purge", "--before", "2099-01-01", "--data-dir", str(gw.data_dir))
    assert purged.returncode == 0 and "2 chat messages and 1 uploads" in purged.stdout
    assert not files.path(hashlib.sha256(OPUS).hexdigest()).exists()
    assert "no messages yet" in fieldgate("orders", "chat", oid, "--data-dir", str(gw.data_dir)).stdout

    orphan = files.put(PNG)  # a file whose row never committed (a crash between the two)
    data = ["--data-dir", str(gw.data_dir)]
    checked = fieldgate("db", "check", *data)
    assert checked.returncode == 1 and "1 orphaned file(s)" in checked.stdout
    assert "is in use by another fieldgate" in fieldgate("db", "check", "--fix", *data).stderr  # needs it stopped
    gw.stop()
    assert fieldgate("db", "check", "--fix", *data).returncode == 0
    assert not files.path(orphan).exists()
