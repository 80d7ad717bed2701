"""The pages in a real browser: Debian's Chromium driven by Playwright (the system browser, nothing downloaded),
against a real gateway, with real MQTT peers for the order system and the courier's phone.

Every request a page makes to anything but 127.0.0.1 is refused and counted (the tests run with no map tiles,
`web.tile_url: ""`, as a machine without internet would). Screenshots of both pages at a counter screen's and a
phone's size are written to the test's temp dir (and to $FIELDGATE_SCREENSHOTS if set: README's pictures) and
checked for visible text and markers, not just a 200.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import JPEG, GatewayProcess, Peer, add_user, at, launch, register, shop_order, store_config
from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Chromium's flags for a headless run in a closed sandbox: no GPU, no calls home.
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 812}
SHOP_ID, COURIER = "tulip", "k1"
PASSWORD = "counter-pw-1"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[GatewayProcess]:
    """A gateway for this module, on each store, with its shops, couriers and the pages' users."""
    gateway = launch(tmp_path_factory.mktemp("web"), config={"web": {"tile_url": ""}, "log_level": "DEBUG",
                                                             **store_config(request, "web")})
    register(gateway, SHOP_ID, {COURIER: "Wang Wei", "k2": "Zhao Lei"}, locale="en")
    register(gateway, "peony", {"k9": "Li Ming"})  # a shop in zh-CN, the default locale
    for name, role, user_id in (("tulip-counter", "shop", SHOP_ID), ("peony-counter", "shop", "peony"),
                                ("boss", "operator", "boss")):
        add_user(gateway, name, role, user_id, password=PASSWORD)
    yield gateway
    gateway.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed (.ci/run installs it: apt-get install chromium)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


class Visit:
    """A browser context that refuses every request not to 127.0.0.1 and remembers them."""

    def __init__(self, browser: Browser, gw: GatewayProcess, viewport: dict[str, int], locale: str = "en-GB") -> None:
        self.context = browser.new_context(viewport=viewport, locale=locale, base_url=gw.url)
        self.outside: list[str] = []
        self.context.route(re.compile(r"^(?!https?://127\.0\.0\.1[:/]).*"), self._refuse)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _refuse(self, route: Any) -> None:
        self.outside.append(route.request.url)
        route.abort()


@pytest.fixture
def visit(browser: Browser, gw: GatewayProcess) -> Iterator[Callable[..., Visit]]:
    opened: list[Visit] = []

    def _visit(viewport: dict[str, int] = DESKTOP, locale: str = "en-GB") -> Visit:
        v = Visit(browser, gw, viewport, locale)
        opened.append(v)
        return v

    yield _visit
    for v in opened:
        assert not v.errors, f"the page raised: {v.errors}"
        assert not v.outside, f"the page asked for outside addresses: {v.outside}"
        v.context.close()


def log_in(page: Page, user: str = "tulip-counter", password: str = PASSWORD) -> None:
    page.goto("/shop/")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#live")).to_have_text(re.compile("live|实时"))


def card(page: Page, order_id: str) -> Any:
    return page.locator(f'.card[data-order="{order_id}"]')


def column_of(page: Page, order_id: str) -> Any:
    return page.locator(f'.column:has(.card[data-order="{order_id}"])')


def screenshot(page: Page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    assert path.stat().st_size > 10_000, f"{name} looks blank"
    if folder := os.environ.get("FIELDGATE_SCREENSHOTS"):
        shutil.copy(path, Path(folder) / path.name)
    return path


def soon() -> dict[str, str]:
    """A delivery window from now to two hours from now."""
    now = datetime.now(UTC)
    return {"start": now.isoformat(), "end": (now + timedelta(hours=2)).isoformat()}


def phone_of(gw: GatewayProcess, peers: Callable[..., Peer], courier: str, north_m: float) -> Peer:
    phone = peers(gw.port, subscribe=(f"couriers/{courier}/tasks", f"couriers/{courier}/errors"))
    phone.publish(f"couriers/{courier}/presence", {"online": True})
    phone.publish(f"couriers/{courier}/gps", at(north_m, ago=5))
    return phone


# ---------------------------------------------------------------- the shop terminal


def test_the_shop_terminal_lives_with_the_orders(gw, visit, peers, ids, tmp_path):
    """Log in; an order on orders/in appears within a second; a fix moves the courier's marker; Assign makes the
    courier's phone get its task; the courier's status moves the card; screenshots at both sizes."""
    erp = peers(gw.port, subscribe=("ordersys/acks",))
    phone = phone_of(gw, peers, COURIER, 800)
    v = visit()
    page = v.page
    log_in(page)
    expect(page.locator(".pin-shop")).to_have_count(1)
    expect(page.locator('.column[data-column="new"] h2')).to_contain_text("New")

    oid = "A2041"
    erp.publish("orders/in", shop_order(oid, SHOP_ID, courier_id=None, window=soon()))
    expect(card(page, oid)).to_be_visible(timeout=1000)  # within a second of the order
    expect(card(page, oid)).to_have_class(re.compile(r"\bflash\b"))  # it flashes, then fades
    expect(card(page, oid)).not_to_have_class(re.compile(r"\bflash\b"))
    expect(column_of(page, oid)).to_have_attribute("data-column", "new")
    expect(card(page, oid)).to_contain_text("Li · Moon Bay 7")
    expect(card(page, oid).locator(".badge")).to_have_count(0)
    expect(page.locator(f'.pin-dest[data-order="{oid}"]')).to_have_count(1)

    marker = page.locator(f'.pin-courier[data-courier="{COURIER}"]')
    expect(marker).to_have_count(1)
    expect(marker).not_to_have_class(re.compile(r"\boff\b"))  # online
    expect(page.locator(f'#couriers [data-courier="{COURIER}"]')).to_contain_text(re.compile(r"fix \d+ s ago"))
    expect(page.locator('#couriers [data-courier="k2"]')).to_contain_text("no fix yet")
    before = marker.get_attribute("data-lat")
    phone.publish(f"couriers/{COURIER}/gps", at(1500))
    expect(marker).not_to_have_attribute("data-lat", before or "")

    card(page, oid).get_by_role("button", name="Assign").click()
    dialog = page.locator("#dialog")
    expect(dialog.get_by_text("Wang Wei")).to_be_visible()
    expect(dialog).to_contain_text("km")
    dialog.get_by_label(re.compile("Wang Wei")).check()
    dialog.get_by_role("button", name="Confirm").click()
    [task] = phone.wait_for(f"couriers/{COURIER}/tasks", lambda t: t["order_id"] == oid and t["kind"] == "assign")
    expect(column_of(page, oid)).to_have_attribute("data-column", "assigned")

    phone.publish(f"couriers/{COURIER}/status", {"order_id": oid, "status": "picked_up", "msg_id": task["msg_id"]})
    expect(column_of(page, oid)).to_have_attribute("data-column", "on_the_way")
    phone.publish(f"couriers/{COURIER}/gps", at(1800, ago=-2))  # newer than the fix above, even in the same second
    expect(card(page, oid)).to_contain_text("ETA")

    erp.publish("orders/in", shop_order("A2042", SHOP_ID, window=soon(),
                                        recipient={"name": "Chen Jie", "phone": "+8613800000001"},
                                        address={"text": "Harbour Road 12", "lat": 31.2151, "lon": 121.4602}))
    erp.publish("orders/in", shop_order("A2043", SHOP_ID, courier_id="k2", window=soon(),
                                        address={"text": "Lotus Lane 3", "lat": 31.2402, "lon": 121.4935}))
    erp.publish("orders/in", shop_order("A2044", SHOP_ID, recipient={"name": "Zhou Min", "phone": "+8613800000002"},
                                        address={"text": "Garden Court 8", "lat": 31.2207, "lon": 121.4913}))
    expect(column_of(page, "A2043")).to_have_attribute("data-column", "assigned")
    expect(card(page, "A2044").locator('[data-problem="late_risk"]')).to_be_visible()  # its window has passed
    expect(card(page, "A2042")).to_be_visible()
    desktop = screenshot(page, tmp_path, "shop-terminal-desktop")
    page.set_viewport_size(PHONE)
    expect(card(page, oid)).to_be_visible()
    phone_shot = screenshot(page, tmp_path, "shop-terminal-phone")
    assert desktop.read_bytes() != phone_shot.read_bytes()


def test_an_orders_details_show_its_timeline_photos_and_conversation(gw, visit, peers, ids):
    erp = peers(gw.port, subscribe=("ordersys/acks",))
    phone = peers(gw.port, subscribe=(f"couriers/{COURIER}/tasks", f"couriers/{COURIER}/chat"))
    oid = ids("D")
    erp.publish("orders/in", shop_order(oid, SHOP_ID, courier_id=COURIER))
    phone.wait_for(f"couriers/{COURIER}/tasks", lambda t: t["order_id"] == oid)
    phone.publish(f"couriers/{COURIER}/media/{oid}/packed", JPEG)
    phone.publish(f"couriers/{COURIER}/chat/in", {"order_id": oid, "msg_id": "c1", "text": "at the door soon"})
    v = visit()
    page = v.page
    log_in(page)
    card(page, oid).get_by_role("button", name="Details").click()
    detail = page.locator("#detail")
    expect(detail.locator(".timeline")).to_contain_text("created")
    expect(detail.locator(".timeline")).to_contain_text("media")
    photo = detail.locator(".photos img")
    expect(photo).to_have_count(1)
    assert page.evaluate("(src) => fetch(src).then((r) => r.headers.get('content-type'))",
                         photo.get_attribute("src")) == "image/jpeg"
    expect(detail.locator(".chat")).to_contain_text("at the door soon")
    detail.get_by_label("Message").fill("the blue door, please")
    detail.get_by_role("button", name="Send").click()
    expect(detail.locator(".chat li.mine")).to_contain_text("the blue door, please")  # read back, live
    phone.wait_for(f"couriers/{COURIER}/chat", lambda m: m.get("text") == "the blue door, please")


def test_errors_show_the_gateways_words_and_actions_work_by_keyboard(gw, visit, peers, ids):
    erp = peers(gw.port)
    oid = ids("K")
    erp.publish("orders/in", shop_order(oid, SHOP_ID, courier_id=None))
    v = visit()
    page = v.page
    log_in(page)
    expect(card(page, oid)).to_be_visible()
    packed = card(page, oid).get_by_role("button", name="Packed")
    packed.focus()
    page.keyboard.press("Enter")
    expect(column_of(page, oid)).to_have_attribute("data-column", "packed")
    card(page, oid).get_by_role("button", name="Cancel").click()
    page.locator("#dialog textarea").fill("customer called it off")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(column_of(page, oid)).to_have_attribute("data-column", "done")
    # an action the gateway refuses (a terminal a moment behind: packed on a cancelled order) shows its words
    page.evaluate("([id]) => command(id, {command: 'packed'}, 'Packed').catch(() => {})", [oid])
    expect(page.locator("#toasts .toast.error")).to_contain_text("already cancelled")
    for control in page.locator("button, input, select, textarea").all():
        if control.is_visible():
            name = control.evaluate("(e) => e.labels?.[0]?.innerText || e.getAttribute('aria-label') || e.innerText")
            assert name.strip(), f"a control without a label: {control.evaluate('(e) => e.outerHTML')}"


def test_text_meets_contrast_on_its_background(gw, visit, peers, ids):
    erp = peers(gw.port)
    oid = ids("C")
    erp.publish("orders/in", shop_order(oid, SHOP_ID, courier_id=None, window={
        "start": "2020-01-01T09:00:00+08:00", "end": "2020-01-01T10:00:00+08:00"}))  # late: a badge
    v = visit()
    page = v.page
    log_in(page)
    expect(card(page, oid).locator(".badge")).to_be_visible()
    ratios = page.evaluate("""() => {
      const rgb = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
      const lum = (c) => { const [r, g, b] = rgb(c).map((v) => { v /= 255;
        return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }); return 0.2126*r + 0.7152*g + 0.0722*b; };
      const bg = (e) => { for (; e; e = e.parentElement) { const c = getComputedStyle(e).backgroundColor;
        if (!c.startsWith("rgba(0, 0, 0, 0)") && c !== "transparent") return c; } return "rgb(255, 255, 255)"; };
      const out = [];
      for (const e of document.querySelectorAll(".card, .card .meta, .badge, .column h2, button, .sub, .live")) {
        if (!e.offsetParent) continue;
        const a = lum(getComputedStyle(e).color), b = lum(bg(e));
        out.push([e.className || e.tagName, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)]);
      }
      return out; }""")
    assert ratios
    low = [(name, round(r, 2)) for name, r in ratios if r < 4.5]
    assert not low, f"below WCAG AA 4.5:1: {low}"


def test_logins_sessions_and_csrf(gw, visit):
    v = visit(locale="zh-CN")
    page = v.page
    page.goto("/shop/")
    expect(page).to_have_url(re.compile("/shop/login"))
    page.get_by_label("用户名").fill("peony-counter")  # the login page speaks the browser's language
    page.get_by_label("密码").fill("wrong")
    page.get_by_role("button", name="登录").click()
    expect(page.locator(".error")).to_contain_text("wrong user name or password")
    assert not v.context.cookies()
    page.get_by_label("用户名").fill("peony-counter")
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    expect(page.locator('.column[data-column="new"] h2')).to_contain_text("新订单")  # the board, the shop's
    [cookie] = v.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    with httpx.Client(base_url=gw.url, cookies={cookie["name"]: cookie["value"]}) as http:
        assert http.get("/shop/api/board").status_code == 200
        refused = http.post("/api/v1/orders/X1/commands", json={"command": "packed"})
        assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
        assert http.get("/shop/api/board", params={"shop": SHOP_ID}).status_code == 403  # another shop's
    with httpx.Client(base_url=gw.url, cookies={cookie["name"]: cookie["value"][:-3] + "AAA"}) as http:
        assert http.get("/shop/api/board").status_code == 401  # a forged cookie
    page.get_by_role("button", name="退出").click()
    expect(page).to_have_url(re.compile("/shop/login"))


def test_an_operator_picks_any_shop(gw, visit):
    v = visit()
    log_in(v.page, "boss")
    expect(v.page.locator("#shop-choice")).to_have_value("peony")  # the first registered shop
    v.page.get_by_label("shop").select_option(SHOP_ID)
    v.page.get_by_role("button", name="查看").click()
    expect(v.page.locator("h1")).to_have_text(f"Shop {SHOP_ID}")
    expect(v.page.locator('.column[data-column="new"] h2')).to_contain_text("New")


# ---------------------------------------------------------------- the customer's tracking page


def test_the_tracking_page_shows_the_eta_and_the_courier_only_on_the_way(gw, visit, peers, ids, tmp_path):
    erp = peers(gw.port, subscribe=("ordersys/acks",))
    phone = phone_of(gw, peers, "k2", 500)
    oid = ids("T")
    erp.publish("orders/in", shop_order(oid, SHOP_ID, courier_id="k2"))
    [ack] = erp.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["kind"] == "accepted")
    link = ack["tracking_url"]
    assert re.fullmatch(rf"{re.escape(gw.url)}/t/[A-Za-z0-9_-]{{24}}", link)  # 144 random-looking bits
    [task] = phone.wait_for("couriers/k2/tasks", lambda t: t["order_id"] == oid)

    v = visit(PHONE)
    page = v.page
    weight: list[int] = []  # bytes on the wire: headers and (compressed) bodies
    page.on("requestfinished", lambda r: weight.append(r.sizes()["responseHeadersSize"] +
                                                       r.sizes()["responseBodySize"]))
    page.goto(link)
    expect(page.locator("#live")).to_have_text("live")
    total = sum(weight)
    print(f"tracking page weight: {total} bytes in {len(weight)} responses")
    assert total < 100_000, f"the tracking page weighs {total} bytes"
    expect(page.locator("#status")).to_have_text("A courier is assigned")
    expect(page.locator("#courier")).to_have_text("Your courier: Zhao")  # first name only
    expect(page.locator("#map-later")).to_be_visible()
    expect(page.locator(".pin-courier")).to_have_count(0)  # not before pickup
    assert "+86" not in page.content() and "Sunshine Estate" not in page.content()

    phone.publish("couriers/k2/status", {"order_id": oid, "status": "picked_up", "msg_id": task["msg_id"]})
    phone.publish("couriers/k2/gps", at(1200))
    expect(page.locator("#status")).to_have_text("Picked up: on its way to you")
    expect(page.locator("#eta")).to_contain_text("Arriving around")
    expect(page.locator(".pin-courier")).to_have_count(1)
    expect(page.locator(".pin-dest")).to_have_count(1)
    page.locator("#chat-text").fill("Please ring twice")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#chat")).to_contain_text("Please ring twice")
    screenshot(page, tmp_path, "tracking-phone")
    page.set_viewport_size(DESKTOP)
    screenshot(page, tmp_path, "tracking-desktop")

    phone.publish("couriers/k2/status", {"order_id": oid, "status": "delivered", "msg_id": task["msg_id"]})
    expect(page.locator("#status")).to_have_text("Delivered")
    expect(page.locator(".pin-courier")).to_have_count(0)  # never after delivery
    page.locator('label[for="star5"]').click()
    page.get_by_role("button", name="Send rating").click()
    expect(page.locator("#rated")).to_have_text("Thank you for your rating!")
    erp.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["kind"] == "rated")


def test_a_wrong_token_is_a_plain_404_page(gw, visit):
    v = visit(PHONE)
    response = v.page.goto("/t/AAAAAAAAAAAAAAAAAAAAAAAA")
    assert response is not None and response.status == 404
    expect(v.page.locator("h1")).to_have_text("No such delivery")
    with httpx.Client(base_url=gw.url) as http:
        assert http.get("/t/x").status_code == 404
        refused = http.post("/t/AAAAAAAAAAAAAAAAAAAAAAAA/chat", json={"text": "hi"})
        assert refused.status_code == 404 and refused.headers["content-type"] == "application/problem+json"


# ---------------------------------------------------------------- bad input on the pages' endpoints


def test_bad_input_on_the_pages_endpoints_gets_a_clear_problem_and_a_dead_letter(gw, peers, ids):
    erp = peers(gw.port, subscribe=("ordersys/acks",))
    oid, other = ids("B"), ids("O")
    erp.publish("orders/in", shop_order(oid, SHOP_ID, courier_id=None))
    erp.publish("orders/in", shop_order(other, "peony", courier_id=None))
    [ack] = erp.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["kind"] == "accepted")
    link = ack["tracking_url"].removeprefix(gw.url)
    erp.wait_for("ordersys/acks", lambda a: a["order_id"] == other and a["kind"] == "accepted")
    with httpx.Client(base_url=gw.url, timeout=15) as http:
        def refused(response: httpx.Response, status: int, words: str) -> None:
            assert response.status_code == status, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert words in response.json()["detail"], response.json()

        dead = len(gw.queries.dead_letters(limit=1000))
        json_type = {"Content-Type": "application/json"}
        refused(http.post(f"{link}/chat", content=b"{not json", headers=json_type), 400, "not valid JSON")
        refused(http.post(f"{link}/chat", json={"text": 42}), 422, "text")
        refused(http.post(f"{link}/chat", json={"text": "x" * 70_000}), 413, "bytes")
        form = {"Content-Type": "application/x-www-form-urlencoded"}  # what a form on another site would post
        refused(http.post(f"{link}/chat", content=b"text=hi", headers=form), 415, "not JSON")
        refused(http.post(f"{link}/rating", json={"stars": 5}), 409, "only a delivered order is rated")
        refused(http.post(f"{link}/rating", json={"stars": 9}), 422, "stars")
        assert len(gw.queries.dead_letters(limit=1000)) >= dead + 6
        # a shop's session may not read or write another shop's order, nor an order nobody placed
        login = http.post("/shop/login", data={"username": "tulip-counter", "password": PASSWORD})
        assert login.status_code == 303 and "fg_session" in http.cookies
        csrf = re.search(r'name="csrf" content="([^"]+)"', http.get("/shop/").text)
        assert csrf is not None
        write = {"X-CSRF-Token": csrf.group(1)}
        refused(http.get(f"/api/v1/orders/{other}/chat"), 403, "not one of")
        refused(http.post(f"/api/v1/orders/{other}/chat", json={"msg_id": "m1", "text": "hi"}, headers=write), 403,
                "belongs to shop peony")
        refused(http.post("/api/v1/orders/NOPE-1/chat", json={"msg_id": "m1", "text": "hi"}, headers=write), 404,
                "unknown")
        refused(http.get("/api/v1/media/nope"), 404, "no media")
        sent = http.post(f"/api/v1/orders/{oid}/chat", json={"msg_id": "m1", "text": "ready at 5"}, headers=write)
        assert sent.status_code == 201 and sent.json()["seq"] == 1
        again = http.post(f"/api/v1/orders/{oid}/chat", json={"msg_id": "m1", "text": "ready at 5"}, headers=write)
        assert again.status_code == 200 and again.json()["duplicate"] is True
        # a flood from one link waits its turn, and the gateway keeps serving
        answers = [http.post(f"{link}/chat", json={"text": f"hello {n}"}).status_code for n in range(40)]
        assert 429 in answers and 200 in answers
        assert http.get("/readyz").status_code == 200
